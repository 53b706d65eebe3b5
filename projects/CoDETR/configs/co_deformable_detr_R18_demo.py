"""Demo Co-Deformable-DETR: deformable_detr_R18_demo.py plus the adapter, ATSS and Faster R-CNN
auxiliary heads and their positive queries; same data, optimiser and iterations. Demo-scale
values: 128-d, 2fc 256, ATSS anchors 4 x stride and RPN anchors one size 4 x stride x 3 ratios
(the demo objects are small), fewer RPN proposals and RoI samples, at most 100 positive
queries."""

from detectron2.layers import ShapeSpec

from .common.codetr import model
from .deformable_detr_R18_demo import dataloader, lr_multiplier, optimizer, train
from .deformable_detr_R18_demo import model as _base

model.update({k: v for k, v in _base.items() if k != "_target_"})
model.adapter.channels = 128
model.atss_head.input_shape = [ShapeSpec(channels=128, stride=s) for s in (8, 16, 32, 64, 128)]
model.atss_head.anchor_scale = 4.0
model.rpn.head.in_channels = 128
model.rpn.anchor_generator.sizes = [[4 * s] for s in (8, 16, 32, 64, 128)]
model.rpn.head.num_anchors = 3
model.rpn.pre_nms_topk = (1000, 500)
model.rpn.post_nms_topk = (300, 300)
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.input_shape.channels = 128
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape.channels = 256
model.max_positive_queries = 100
train.output_dir = "output/co_deformable_detr_R18_demo"
