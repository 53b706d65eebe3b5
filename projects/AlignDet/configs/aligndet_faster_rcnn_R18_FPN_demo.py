"""AlignDet box-domain pretraining at demo scale on CPU: the demo Faster R-CNN (ResNet-18 frozen,
128-channel FPN, RPN, 512-d box head) on the 400 unlabeled demo images and their
ratio3size0008 proposals, two views at short side 176-208, 8 images per batch.

The frozen backbone comes from train.init_checkpoint (projects/AlignDet/run_demo.py passes a
ResNet-18 trained on another labelled split); FPN and heads start random, as in the paper.
RoI sample count scaled to the demo (128 per image, all positive when possible).
"""

from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from d2ext.modeling.momentum import MomentumUpdateHook

from ....configs.common.optim import SGD as optimizer
from ....configs.common.schedules import multistep as lr_multiplier
from ....configs.common.train import train
from .common.data import aligndet_loader
from .common.detectors import aligndet_model, faster_rcnn_demo

model = aligndet_model(faster_rcnn_demo, roi_samples=128)

dataloader = OmegaConf.create()
dataloader.train = aligndet_loader(
    "d2ext_demo_unlabeled",
    "${oc.env:DETECTRON2_DATASETS,datasets}/d2ext_demo/proposals/aligndet_unlabeled",
    short_edge=(176, 208),
    max_size=320,
    batch=8,
)
dataloader.train.num_workers = 1

train.max_iter = 200
train.extra_hooks = [L(MomentumUpdateHook)(base_momentum=0.996)]
train.clip_grad_norm = 5.0
train.checkpointer.period = 100
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/aligndet_faster_rcnn_R18_FPN_demo"
optimizer.lr = 0.02
optimizer.weight_decay = 1e-4
lr_multiplier.warmup_iter = 50
