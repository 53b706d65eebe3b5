"""AlignDet box-domain pretraining of FCOS R50-FPN on COCO train2017 images (labels unused),
the authors' recipe: 12 epochs at batch 16 (90k iterations), SGD 0.01, wd 1e-4, steps at 2/3
and 8/9; momentum detector 0.996 -> 1 (cosine); two views at short side 640-800 (long side at
most 1333), flip, one colour op; the ResNet frozen (no gradient, BN eval).

Needs the proposals (AlignDet's ratio3size0008 filter) and an ImageNet ResNet-50 for both
detectors, as a local file (nothing is downloaded):
    python tools/generate_proposals.py --dataset coco_2017_train \
        --out $DETECTRON2_DATASETS/coco/proposals_aligndet --filter ratio3size0008 --shard i/N
    train.init_checkpoint=<R-50 under online.backbone.bottom_up.* and target.backbone.bottom_up.*>
    (d2ext.projects.aligndet.backbone_init_for_aligndet makes one from a detectron2 model)
"""

from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from d2ext.modeling.momentum import MomentumUpdateHook

from ....configs.common.models.fcos_fpn import model as _detector
from ....configs.common.optim import SGD as optimizer
from ....configs.common.schedules import multistep as lr_multiplier
from ....configs.common.train import train
from .common.data import aligndet_loader
from .common.detectors import aligndet_model

model = aligndet_model(_detector, num_samples=2048)

dataloader = OmegaConf.create()
dataloader.train = aligndet_loader(
    "coco_2017_train",
    "${oc.env:DETECTRON2_DATASETS,datasets}/coco/proposals_aligndet",
    short_edge=(640, 800),
    max_size=1333,
    batch=16,
)

train.max_iter = 90000
train.extra_hooks = [L(MomentumUpdateHook)(base_momentum=0.996)]
train.checkpointer.period = 5000
train.eval_period = 0
train.output_dir = "output/aligndet_fcos_R50_FPN_coco_12ep"
optimizer.lr = 0.01
optimizer.weight_decay = 1e-4
