"""The demo FCOS: ResNet-18 with BN, 128-channel FPN P3-P7, 4-conv heads of 128 channels, the
demo's 5 classes."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from d2ext.model_zoo import get_config

model = get_config("common/models/fcos_fpn.py").model
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.update(depth=18, norm="BN")
del model.backbone.bottom_up.stages.stride_in_1x1
model.backbone.norm = "BN"
model.backbone.out_channels = 128
model.backbone.top_block = L(LastLevelP6P7)(in_channels=128, out_channels=128, in_feature="p5")
model.head.input_shape = [ShapeSpec(channels=128)] * 5
model.head.conv_dims = [128, 128, 128, 128]
model.num_classes = 5
