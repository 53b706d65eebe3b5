"""Building blocks of the Co-DETR configs: the two-stage Deformable DETR base detector
(``deformable_detr``), Co-Deformable-DETR (``co_deformable_detr``: the base plus the adapter,
ATSS and Faster R-CNN auxiliary heads and positive queries), the authors' optimiser and the
DETR-style COCO data.

Authors' defaults (Co-DETR's co_deformable_detr_r50_1x_coco): 300 queries, 6 + 6 layers,
256-d, FFN 2048, 4 levels (C3-C5 + one extra), dropout 0.1; Hungarian costs / losses: focal 2,
L1 5, GIoU 2; ATSS: 1 conv, anchor scale 8, top-k 9, focal 1, GIoU 2, centerness 1; R-CNN:
RPN 256 samples, ROI 512 samples, 2fc 1024, GIoU 10; aux losses x12 (6 layers x lambda2 2);
lambda1 1; up to 300 positive queries per image; AdamW 2e-4, wd 1e-4, backbone lr x0.1,
grad clip 0.1; 12 epochs, lr x0.1 after epoch 11.
"""

import detectron2.data.transforms as T
import torch
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers
from detectron2.solver.build import get_default_optimizer_params

from d2ext.modeling.atss import ATSSHead
from d2ext.modeling.deformable_detr import (
    ChannelMapper,
    DeformableDETR,
    DeformableTransformer,
    HungarianMatcher,
    SetCriterion,
    decoder_loss_weights,
)
from d2ext.projects.codetr import CoDeformableDETR, CoStandardROIHeads, MultiScaleAdapter
from d2ext.solver import PrefixLRFactor

NUM_CLASSES = 80
D_MODEL = 256
STRIDES = [8, 16, 32, 64]  # C3, C4, C5 and the mapper's extra level
AUX_STRIDES = STRIDES + [128]  # the adapter's extra level
AUX_FEATURES = [f"p{s.bit_length() - 1}" for s in AUX_STRIDES]

backbone = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
    stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
    out_features=["res3", "res4", "res5"],
    freeze_at=1,
)

deformable_detr = L(DeformableDETR)(
    backbone=backbone,
    neck=L(ChannelMapper)(
        input_shapes={
            "res3": ShapeSpec(channels=512, stride=8),
            "res4": ShapeSpec(channels=1024, stride=16),
            "res5": ShapeSpec(channels=2048, stride=32),
        },
        in_features=["res3", "res4", "res5"],
        out_channels=D_MODEL,
        num_extra_levels=1,
    ),
    transformer=L(DeformableTransformer)(
        num_classes=NUM_CLASSES,
        d_model=D_MODEL,
        n_heads=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
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


def _rcnn_branch(channels, strides, features, num_classes, anchor_scale=8):
    rpn = L(RPN)(
        in_features=features,
        head=L(StandardRPNHead)(in_channels=channels, num_anchors=3),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[anchor_scale * s] for s in strides],
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=strides,
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        ),
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_topk=(4000, 1000),
        post_nms_topk=(1000, 1000),
        nms_thresh=0.7,
    )
    roi_heads = L(CoStandardROIHeads)(
        num_classes=num_classes,
        batch_size_per_image=512,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(
            thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False
        ),
        box_in_features=features,
        box_pooler=L(ROIPooler)(
            output_size=7,
            scales=[1.0 / s for s in strides],
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=L(FastRCNNConvFCHead)(
            input_shape=ShapeSpec(channels=channels, height=7, width=7),
            conv_dims=[],
            fc_dims=[1024, 1024],
        ),
        box_predictor=L(FastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=1024),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(10, 10, 5, 5)),
            num_classes=num_classes,
            box_reg_loss_type="giou",
            loss_weight={"loss_box_reg": 10.0},
        ),
    )
    return rpn, roi_heads


_rpn, _roi_heads = _rcnn_branch(D_MODEL, AUX_STRIDES, AUX_FEATURES, NUM_CLASSES)

co_deformable_detr = L(CoDeformableDETR)(
    **{k: v for k, v in deformable_detr.items() if k != "_target_"},
    adapter=L(MultiScaleAdapter)(channels=D_MODEL, strides=STRIDES),
    atss_head=L(ATSSHead)(
        input_shape=[ShapeSpec(channels=D_MODEL, stride=s) for s in AUX_STRIDES],
        num_classes=NUM_CLASSES,
        num_convs=1,
        anchor_scale=8.0,
        topk=9,
        loss_weights={"loss_cls": 1.0, "loss_bbox": 2.0, "loss_centerness": 1.0},
    ),
    rpn=_rpn,
    roi_heads=_roi_heads,
    lambda1=1.0,
    lambda2=2.0,
    max_positive_queries=300,
)

optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}",
        weight_decay_norm=None,  # the authors decay every parameter
        lr_factor_func=L(PrefixLRFactor)(prefixes="backbone.", factor=0.1),
    ),
    lr=2e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)

# DETR-style COCO training data: flip, then either a multi-scale resize or a crop followed by
# one (here: the crop applied with probability 0.5 before the resize, detectron2 having no
# one-of-two choice of augmentation lists).
dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.RandomApply)(
        tfm_or_aug=L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)), prob=0.5
    ),
    L(T.ResizeShortestEdge)(
        short_edge_length=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
        max_size=1333,
        sample_style="choice",
    ),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 16

# one class count for every head: set model.transformer.num_classes
co_deformable_detr.atss_head.num_classes = "${..transformer.num_classes}"
co_deformable_detr.roi_heads.num_classes = "${..transformer.num_classes}"
co_deformable_detr.roi_heads.box_predictor.num_classes = "${..num_classes}"
