"""The demo DINO, sized for a 2-core CPU as the demo Deformable DETR
(configs/common/models/deformable_detr_R18_demo.py): ResNet-18 with BN (all stages trained),
128-d, 3 + 3 layers, FFN 512, 4 levels, 100 queries, 30 denoising queries, the demo's 5 classes,
the top 100 (query, class) pairs at test; input normalised as detectron2's R18 demo baseline
(BGR, std 1)."""

from d2ext.model_zoo import get_config

model = get_config("common/models/dino.py").model
_demo = get_config("common/models/deformable_detr_R18_demo.py").model
model.backbone = _demo.backbone
model.neck = _demo.neck
# the demo Deformable DETR's sizes, so the demo pairs compare at one size
_sizes = ("num_classes", "d_model", "num_encoder_layers", "num_decoder_layers")
_sizes += ("dim_feedforward", "dropout", "num_queries")
model.transformer.update({k: _demo.transformer[k] for k in _sizes})
model.denoising.num_dn_queries = 30
model.num_detections = 100
model.size_divisibility = 32
model.pixel_mean = _demo.pixel_mean
model.pixel_std = _demo.pixel_std
model.input_format = _demo.input_format
