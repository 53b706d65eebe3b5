"""The demo two-stage Deformable DETR, sized for a 2-core CPU: ResNet-18 with BN (all stages
trained), 128-d, 3 + 3 layers, FFN 512, 100 queries, no dropout, the demo's 5 classes; input
normalised as detectron2's R18 demo baseline that trains its backbone (BGR, std 1)."""

from d2ext.model_zoo import get_config

model = get_config("common/models/deformable_detr.py").model
model.backbone.stem.norm = "BN"
model.backbone.stages.update(depth=18, norm="BN")
del model.backbone.stages.stride_in_1x1
model.backbone.freeze_at = 0
model.neck.input_shapes.res3.channels = 128
model.neck.input_shapes.res4.channels = 256
model.neck.input_shapes.res5.channels = 512
model.neck.out_channels = 128
model.transformer.update(
    num_classes=5,
    d_model=128,
    num_encoder_layers=3,
    num_decoder_layers=3,
    dim_feedforward=512,
    dropout=0.0,
    num_queries=100,
)
model.pixel_mean = (103.53, 116.28, 123.675)
model.pixel_std = (1.0, 1.0, 1.0)
model.input_format = "BGR"
