"""DINO-4scale R-50, 12 epochs on COCO, with the authors' recipe (mmdetection's
dino-4scale_r50_8xb2-12e_coco): configs/common/models/dino.py, DETR augmentation (the two
AutoAugment policies), images without objects kept, AdamW 1e-4, wd 1e-4, lr x0.1 for the
backbone only, gradients clipped to 0.1, batch 16, lr x0.1 after epoch 11."""

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco_detr.py").dataloader
model = get_config("common/models/dino.py").model
optimizer = get_config("common/optim.py").DETRAdamW
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

dataloader.train.dataset.filter_empty = False  # the authors' filter_empty_gt=False
optimizer.lr = 1e-4
optimizer.params.lr_factor_func.contains = []  # custom_keys: backbone only
# 12 epochs of COCO train2017 (117k images) at batch 16; lr x0.1 after epoch 11
train.max_iter = 88000
lr_multiplier.steps = (11 / 12,)
lr_multiplier.warmup_iter = 0
train.checkpointer.period = 5000
train.eval_period = 0
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.allow_partial_init = True  # ImageNet backbone only
train.output_dir = "output/dino_R50_4scale_12ep_coco"
