"""Fine-tuning after AlignDet, shared by the R50-FPN detectors: the authors' COCO 1x recipe
(configs/coco/*_r50_fpn_1x_coco.py on mmdet's schedule_1x and coco_detection): 12 epochs at
batch 16 (88k iterations for the 117,266 train2017 images with boxes), linear warmup 500
iterations from 0.001, lr x0.1 after epochs 8 and 11, single-scale input (short side 800, long
side at most 1333) with flip 0.5; SGD momentum 0.9 with the authors' rule (README): lr x1.5,
wd x0.5 (5e-5) on every parameter, norms included (mmcv's parameter groups). The configs set
the model (SyncBN backbone with norm_eval, stem and res2 frozen, SyncBN FPN; see
``aligndet_finetune_backbone``) and the lr; train.init_checkpoint: the extracted AlignDet
checkpoint."""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_finetune_optimizer

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations[0].short_edge_length = (800,)  # single scale
optimizer = aligndet_finetune_optimizer(lr=0.02, weight_decay=1e-4 * 0.5)
lr_multiplier = get_config("common/schedules.py").multistep
lr_multiplier.steps = (8 / 12, 11 / 12)
lr_multiplier.warmup_iter = 500
train = get_config("common/train.py").train
train.max_iter = 88000  # 12 epochs of 117,266 images at batch 16
train.init_checkpoint = ""  # the extracted AlignDet checkpoint
