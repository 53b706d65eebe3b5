"""Faster R-CNN R50-FPN 1x on COCO 2017 (detectron2's recipe: 90k iterations at batch 16,
SGD 0.02, decay at 60k / 80k). ImageNet weights: set train.init_checkpoint to a local file."""

from ..common.data.coco import dataloader
from ..common.models.faster_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedules import multistep as lr_multiplier
from ..common.train import train

dataloader.train.mapper.use_instance_mask = False
train.max_iter = 90000
train.output_dir = "output/faster_rcnn_R50_FPN_1x_coco"
