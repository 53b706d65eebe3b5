"""Two-stage Deformable DETR R-50 (box refinement, mixed query selection, look-forward-twice), the
base detector of Co-DETR, with the authors' defaults (Co-DETR's co_deformable_detr_r50_1x_coco):
300 queries, 6 + 6 layers, 256-d, FFN 2048, 4 levels (C3-C5 + one extra), dropout 0.0,
xavier init of the transformer; R-50 stem and res2 frozen (their frozen_stages=1), every BN
frozen; Hungarian costs and losses: focal 2, L1 5, GIoU 2 on every decoder layer."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from d2ext.modeling.deformable_detr import (
    ChannelMapper,
    DeformableDETR,
    DeformableTransformer,
    HungarianMatcher,
    SetCriterion,
    decoder_loss_weights,
)

model = L(DeformableDETR)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res3", "res4", "res5"],
        freeze_at=2,  # stem + res2: the authors' frozen_stages=1
    ),
    neck=L(ChannelMapper)(
        input_shapes={
            "res3": ShapeSpec(channels=512, stride=8),
            "res4": ShapeSpec(channels=1024, stride=16),
            "res5": ShapeSpec(channels=2048, stride=32),
        },
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        num_extra_levels=1,
    ),
    transformer=L(DeformableTransformer)(
        num_classes=80,
        d_model=256,
        n_heads=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.0,
        n_levels=4,
        n_points=4,
        num_queries=300,
        mixed_selection=True,
        look_forward_twice=True,
    ),
    criterion=L(SetCriterion)(
        num_classes="${..transformer.num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0),
        weight_dict=L(decoder_loss_weights)(
            num_decoder_layers="${...transformer.num_decoder_layers}",
            loss_class=2.0,
            loss_bbox=5.0,
            loss_giou=2.0,
        ),
    ),
    # torchvision's ImageNet R-50 (detectron2://ImageNetPretrained/torchvision/R-50.pkl), RGB
    pixel_mean=(123.675, 116.28, 103.53),
    pixel_std=(58.395, 57.12, 57.375),
    input_format="RGB",
    num_detections=100,
)
