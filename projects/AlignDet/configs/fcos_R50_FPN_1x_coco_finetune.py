"""Fine-tuning FCOS R50-FPN 1x on COCO after AlignDet, the authors' recipe
(configs/coco/fcos_r50_fpn_1x_coco.py): common/finetune_coco_1x.py's schedule and input; SGD
with lr 0.01 x 1.5, wd 5e-5, biases (outside norm layers) at lr x2 without weight decay,
gradients clipped to a full-model L2 norm of 35 in optimizer.step(); ResNet with SyncBN kept in
eval mode (norm_eval), stem and res2 frozen; FPN with SyncBN. The detector is detectron2's FCOS
(GN head, centre sampling, GIoU).

    python tools/convert_pretrain.py output/aligndet_fcos_R50_FPN_coco_12ep/model_final.pth \
        aligndet_d2.pth --map online.= --drop-source projector --config-file <this>
    python tools/train_net.py --num-gpus 8 --config-file <this> \
        train.init_checkpoint=aligndet_d2.pth
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import (
    aligndet_finetune_backbone,
    aligndet_finetune_optimizer,
)

from .common.finetune_coco_1x import dataloader, lr_multiplier, train

model = get_config("common/models/fcos_fpn.py").model
aligndet_finetune_backbone(model.backbone.bottom_up, norm="SyncBN", freeze_at=2)
model.backbone.norm = "SyncBN"
optimizer = aligndet_finetune_optimizer(
    lr=0.01 * 1.5, weight_decay=1e-4 * 0.5, bias_lr_mult=2.0, bias_decay_mult=0.0, clip_value=35.0
)
train.output_dir = "output/fcos_R50_FPN_1x_coco_aligndet_finetune"
