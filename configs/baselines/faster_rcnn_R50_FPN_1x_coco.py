"""Faster R-CNN R50-FPN 1x on COCO 2017 (detectron2's recipe: 90k iterations at batch 16,
SGD 0.02, decay at 60k / 80k). ImageNet weights: set train.init_checkpoint to a local file."""

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco.py").dataloader
model = get_config("common/models/faster_rcnn_fpn.py").model
optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

dataloader.train.mapper.use_instance_mask = False
train.max_iter = 90000
train.output_dir = "output/faster_rcnn_R50_FPN_1x_coco"
