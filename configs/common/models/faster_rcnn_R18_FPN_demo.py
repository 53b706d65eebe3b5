"""The demo Faster R-CNN: R18-FPN sized for a 2-core CPU (ResNet-18 with BN, 128-channel FPN,
512-d box head, small RPN/ROI sample counts) on the demo's 5 classes."""

from detectron2.layers import ShapeSpec

from d2ext.model_zoo import get_config

model = get_config("common/models/faster_rcnn_fpn.py").model
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
