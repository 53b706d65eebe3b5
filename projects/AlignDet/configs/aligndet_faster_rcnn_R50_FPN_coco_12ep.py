"""AlignDet box-domain pretraining of Faster R-CNN R50-FPN on COCO train2017 images (labels unused),
the authors' recipe: 12 epochs at batch 16 (90k iterations), SGD 0.02, wd 1e-4, steps at 2/3
and 8/9; momentum detector 0.996 -> 1 (cosine); two views at short side 640-800 (long side at
most 1333), flip, one colour op; the ResNet frozen (no gradient, BN eval).

Needs the proposals (AlignDet's ratio3size0008 filter) and an ImageNet ResNet-50 for both
detectors, as a local file (nothing is downloaded):
    python tools/generate_proposals.py --dataset coco_2017_train \
        --out $DETECTRON2_DATASETS/coco/proposals_aligndet --filter ratio3size0008 --shard i/N
    train.init_checkpoint=<R-50 under online.backbone.bottom_up.* and target.backbone.bottom_up.*>
    (d2ext.projects.aligndet.backbone_init_for_aligndet makes one from a detectron2 model)
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_model

from .common.pretrain_coco_12ep import dataloader, lr_multiplier, optimizer, train

model = aligndet_model(get_config("common/models/faster_rcnn_fpn.py").model, roi_samples=4096)
optimizer.lr = 0.02
train.output_dir = "output/aligndet_faster_rcnn_R50_FPN_coco_12ep"
