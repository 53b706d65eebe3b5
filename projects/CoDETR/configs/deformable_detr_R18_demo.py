"""Demo base detector: two-stage Deformable DETR on the demo shapes, sized for a 2-core CPU
(ResNet-18 with BN, 128-d, 3 + 3 layers, FFN 512, 100 queries, no dropout), from the
signs-trained ResNet-18 (projects/CoDETR/run_demo.py makes it) with the authors' optimiser
(AdamW 2e-4, wd 1e-4, backbone lr x0.1, clip 0.1) at batch 4."""

from ....configs.baselines.faster_rcnn_R18_FPN_demo import dataloader
from ....configs.common.schedules import multistep as lr_multiplier
from ....configs.common.train import train
from .common.codetr import deformable_detr as model
from .common.codetr import optimizer

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
# the demo backbone was trained by detectron2's R18 baseline: BGR, std 1
model.pixel_mean = (103.53, 116.28, 123.675)
model.pixel_std = (1.0, 1.0, 1.0)
model.input_format = "BGR"

train.max_iter = 500
train.clip_grad_norm = 0.1
train.checkpointer.period = 200
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/deformable_detr_R18_demo"
lr_multiplier.steps = (11 / 12,)
lr_multiplier.warmup_iter = 0
