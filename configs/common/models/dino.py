"""DINO-4scale R-50 with the authors' defaults (mmdetection's dino-4scale_r50_8xb2-12e_coco,
the base detector of Co-DETR's Co-DINO): R-50 C3-C5 + one extra level, 900 queries, 6 + 6
layers, 256-d, FFN 2048, dropout 0.0, sine position encoding temperature 20 offset 0;
contrastive denoising with 100 queries, label noise 0.5, box noise 1.0; losses focal 1.0, L1 5,
GIoU 2 on every decoder layer, the selected encoder proposals and the denoising queries;
Hungarian costs 2 / 5 / 2; the top 300 (query, class) pairs at test. R-50 stem and res2 frozen
(their frozen_stages=1), every BN frozen."""

from detectron2.config import LazyCall as L

from d2ext.model_zoo import get_config
from d2ext.modeling.deformable_detr import decoder_loss_weights
from d2ext.modeling.dino import DINO, ContrastiveDenoising, DINOCriterion, DINOTransformer

model = get_config("common/models/deformable_detr.py").model
model._target_ = DINO
model.transformer._target_ = DINOTransformer
del model.transformer.mixed_selection  # always on in DINO
model.transformer.num_queries = 900
model.transformer.xavier_query_embed = True
model.criterion._target_ = DINOCriterion
model.criterion.weight_dict = L(decoder_loss_weights)(
    num_decoder_layers="${...transformer.num_decoder_layers}",
    loss_class=1.0,
    loss_bbox=5.0,
    loss_giou=2.0,
)
model.denoising = L(ContrastiveDenoising)(
    num_classes="${..transformer.num_classes}",
    d_model="${..transformer.d_model}",
    num_dn_queries=100,
    label_noise_ratio=0.5,
    box_noise_scale=1.0,
)
model.position_temperature = 20.0
model.position_offset = 0.0
model.num_detections = 300
model.size_divisibility = 1  # the authors pad to the batch maximum (size_divisor 1)
