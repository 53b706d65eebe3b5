"""AlignDet box-domain pretraining of RetinaNet R50-FPN on COCO train2017 images (labels unused),
the authors' recipe (configs/selfsup/retinanet.py): the schedule and views of
common/pretrain_coco_12ep.py, SGD 0.01; the first 50 proposals per image; 2048 contrastive
anchors per image; the ResNet frozen (no gradient, BN eval).

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

model = aligndet_model(get_config("common/models/retinanet_fpn.py").model, num_samples=2048)
dataloader.train.mapper.max_proposals = 50
optimizer.lr = 0.01
train.output_dir = "output/aligndet_retinanet_R50_FPN_coco_12ep"
