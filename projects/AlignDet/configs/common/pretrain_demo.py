"""AlignDet's box-domain pretraining at demo scale on CPU, shared by the R18 demo detectors: the
400 unlabeled demo images and their ratio3size0008 proposals (NMS at IoU 0.5), two views at
short side 176-208 (uniform), flip, one of the nine RandAug colour operations, 8 images per
batch, 200 steps of SGD (wd 1e-4, warmup 50, clip 5); momentum detector 0.996 -> 1 (cosine).
The configs add the model and its learning rate."""

from omegaconf import OmegaConf

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_loader
from d2ext.solver import with_gradient_clipping

dataloader = OmegaConf.create()
dataloader.train = aligndet_loader(
    "d2ext_demo_unlabeled",
    "${oc.env:DETECTRON2_DATASETS,datasets}/d2ext_demo/proposals/aligndet_unlabeled",
    short_edge=(176, 208),
    sample_style="range",
    max_size=320,
    batch=8,
)
dataloader.train.num_workers = 1
optimizer = get_config("common/optim.py").SGD
optimizer.weight_decay = 1e-4
# full-model L2 norm of the gradients at most 5, clipped in optimizer.step()
optimizer.update(_target_=with_gradient_clipping, optimizer=optimizer._target_, clip_value=5.0)
lr_multiplier = get_config("common/schedules.py").multistep
lr_multiplier.warmup_iter = 50
train = get_config("common/train.py").train
train.max_iter = 200
train.checkpointer.period = 100
train.eval_period = 0
train.log_period = 20
