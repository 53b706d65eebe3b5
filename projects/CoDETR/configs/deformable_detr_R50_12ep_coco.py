"""The base detector alone: two-stage Deformable DETR (box refinement, mixed query selection,
look-forward-twice), R-50, 12 epochs on COCO, the Co-DETR recipe without auxiliary heads:
AdamW 2e-4, wd 1e-4, backbone lr x0.1, grad clip 0.1, DETR-style COCO augmentation at batch 16."""

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco_detr.py").dataloader
model = get_config("common/models/deformable_detr.py").model
optimizer = get_config("common/optim.py").DETRAdamW
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

# 12 epochs of COCO train2017 (117k images) at batch 16; lr x0.1 after epoch 11
train.max_iter = 88000
lr_multiplier.steps = (11 / 12,)
lr_multiplier.warmup_iter = 0
train.checkpointer.period = 5000
train.eval_period = 0
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.allow_partial_init = True  # ImageNet backbone only (about 49% of the parameters)
train.output_dir = "output/deformable_detr_R50_12ep_coco"
