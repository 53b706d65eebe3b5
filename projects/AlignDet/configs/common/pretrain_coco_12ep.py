"""AlignDet's box-domain pretraining schedule on COCO train2017 images (labels unused), shared by
the R50-FPN detectors: 12 epochs at batch 16 (90k iterations), SGD, wd 1e-4, steps at 2/3 and 8/9;
momentum detector 0.996 -> 1 (cosine); two views at short side 640-800 (long side at most 1333),
flip, one colour op. The configs add the model and its learning rate."""

from omegaconf import OmegaConf

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_loader

dataloader = OmegaConf.create()
dataloader.train = aligndet_loader(
    "coco_2017_train",
    "${oc.env:DETECTRON2_DATASETS,datasets}/coco/proposals_aligndet",
    short_edge=(640, 800),
    max_size=1333,
    batch=16,
)
optimizer = get_config("common/optim.py").SGD
optimizer.weight_decay = 1e-4
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train
train.max_iter = 90000
train.checkpointer.period = 5000
train.eval_period = 0
