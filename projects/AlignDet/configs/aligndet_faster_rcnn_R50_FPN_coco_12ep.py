"""AlignDet box-domain pretraining of Faster R-CNN R50-FPN on COCO train2017 images (labels unused),
the authors' recipe (configs/selfsup/mask_rcnn.py without the mask head): the schedule and views
of common/pretrain_coco_12ep.py, SGD 0.02; the box head Shared4Conv1FC (4 conv 256, fc 1024, no
norm); RPN sampling 4096 anchors per image at positive fraction 1.0 (background fills the rest);
RoI sampling up to 4096 foreground RoIs per image and no background RoI; the ResNet frozen (no
gradient, BN eval).

Needs the proposals (AlignDet's ratio3size0008 filter) and an ImageNet ResNet-50 for both
detectors, as a local file (nothing is downloaded):
    python tools/generate_proposals.py --dataset coco_2017_train \
        --out $DETECTRON2_DATASETS/coco/proposals_aligndet --filter ratio3size0008 --shard i/N
    train.init_checkpoint=<R-50 under online.backbone.bottom_up.* and target.backbone.bottom_up.*>
    (d2ext.projects.aligndet.backbone_init_for_aligndet makes one from a detectron2 model)
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_model, shared4conv1fc

from .common.pretrain_coco_12ep import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/faster_rcnn_fpn.py").model
shared4conv1fc(model.roi_heads.box_head)
model = aligndet_model(
    model, roi_samples=4096, positives_only=True, rpn_samples=4096, rpn_positive_fraction=1.0
)
optimizer.lr = 0.02
train.output_dir = "output/aligndet_faster_rcnn_R50_FPN_coco_12ep"
