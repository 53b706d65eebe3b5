"""Fine-tuning Faster R-CNN R50-FPN 1x on COCO after AlignDet, the authors' recipe
(configs/coco/faster_rcnn_r50_fpn_1x_coco.py): common/finetune_coco_1x.py's schedule, input and
SGD with lr 0.02 x 1.5, wd 5e-5; ResNet with SyncBN kept in eval mode (norm_eval), stem and res2
frozen; FPN with SyncBN; box head Shared4Conv1FC (4 conv 256, fc 1024, no norm).

    python tools/convert_pretrain.py output/aligndet_faster_rcnn_R50_FPN_coco_12ep/model_final.pth \
        aligndet_d2.pth --map online.= --drop-source projector --config-file <this>
    python tools/train_net.py --num-gpus 8 --config-file <this> \
        train.init_checkpoint=aligndet_d2.pth
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_finetune_backbone, shared4conv1fc

from .common.finetune_coco_1x import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/faster_rcnn_fpn.py").model
aligndet_finetune_backbone(model.backbone.bottom_up, norm="SyncBN", freeze_at=2)
model.backbone.norm = "SyncBN"
shared4conv1fc(model.roi_heads.box_head)
optimizer.lr = 0.02 * 1.5
train.output_dir = "output/faster_rcnn_R50_FPN_1x_coco_aligndet_finetune"
