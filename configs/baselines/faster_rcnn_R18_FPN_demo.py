"""Faster R-CNN R18-FPN from random initialisation on the demo shapes; the README's main job.

Sized for a 2-core CPU: ResNet-18 with BN, 128-channel FPN, 512-d box head, short side
176-208 (configs/common/data/demo.py), small RPN/ROI sample counts.
"""

from detectron2.layers import ShapeSpec

from ..common.data.demo import dataloader
from ..common.models.faster_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedules import multistep as lr_multiplier
from ..common.train import train

model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.update(depth=18, norm="BN")
del model.backbone.bottom_up.stages.stride_in_1x1
model.backbone.norm = "BN"
model.backbone.out_channels = 128
model.proposal_generator.head.in_channels = 128
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 300)
model.roi_heads.num_classes = 5
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.input_shape = ShapeSpec(channels=128, height=7, width=7)
model.roi_heads.box_head.fc_dims = [512, 512]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=512)

train.max_iter = 700
train.clip_grad_norm = 5.0
train.checkpointer.period = 200
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/faster_rcnn_R18_FPN_demo"
optimizer.lr = 0.02
optimizer.weight_decay = 1e-4
lr_multiplier.warmup_iter = 100
