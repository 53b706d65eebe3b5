"""AlignDet's box-domain pretraining schedule on COCO train2017 images (labels unused), shared by
the R50-FPN detectors, the authors' (configs/_base_/schedules/schedule_1x.py,
configs/_base_/datasets/coco_soft-teacher.py): 12 epochs at batch 16 (88.7k iterations for the
118,287 images), SGD momentum 0.9, wd 1e-4, linear warmup 500 iterations from 0.001, lr x0.1
after epochs 8 and 11; momentum detector 0.996 -> 1 (cosine); two views, each resized to a
short side of 640, 672, ..., 800 (one of six, long side at most 1333), flipped with p 0.5 and
given one of nine RandAug colour operations; proposals de-duplicated by NMS at IoU 0.5 (our
reading of "@0.5"). The configs add the model and its learning rate."""

from omegaconf import OmegaConf

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_loader

dataloader = OmegaConf.create()
dataloader.train = aligndet_loader(
    "coco_2017_train",
    "${oc.env:DETECTRON2_DATASETS,datasets}/coco/proposals_aligndet",
    batch=16,
)
optimizer = get_config("common/optim.py").SGD
optimizer.weight_decay = 1e-4
optimizer.params.weight_decay_norm = None  # the authors decay every parameter
lr_multiplier = get_config("common/schedules.py").multistep
lr_multiplier.steps = (8 / 12, 11 / 12)
lr_multiplier.warmup_iter = 500
train = get_config("common/train.py").train
train.max_iter = 88700  # 12 epochs of 118,287 images at batch 16
train.checkpointer.period = 5000
train.eval_period = 0
