"""Co-Deformable-DETR R-50: the two-stage Deformable DETR of
configs/common/models/deformable_detr.py plus the multi-scale adapter, the ATSS and Faster R-CNN
auxiliary heads and their positive queries.

Authors' defaults (Co-DETR's co_deformable_detr_r50_1x_coco): ATSS: 1 conv, anchor scale 8,
top-k 9, focal 1, GIoU 2, centerness 1; R-CNN: RPN with 9 anchors per location (sizes
4 * 2**(k/3) * stride, k = 0, 1, 2, ratios 0.5 / 1 / 2) and 256 samples, ROI 512 samples over the
adapter's four finest levels (strides 8-64), 2fc 1024, GIoU 10; aux losses x12 (6 layers x
lambda2 2); lambda1 1; 9 to 300 positive queries per image, with the feature term and the
authors' one-scalar-per-head embedding. The auxiliary heads run on the adapter's five levels
(strides 8-128, features p3-p7); every head takes its class count from
``model.transformer.num_classes``.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers

from d2ext.model_zoo import get_config
from d2ext.modeling.atss import ATSSHead
from d2ext.projects.codetr import (
    CoDeformableDETR,
    CoStandardROIHeads,
    MultiScaleAdapter,
    octave_anchor_sizes,
)

model = get_config("common/models/deformable_detr.py").model
model._target_ = CoDeformableDETR
model.update(
    adapter=L(MultiScaleAdapter)(channels=256, strides=[8, 16, 32, 64]),
    atss_head=L(ATSSHead)(
        input_shape=[ShapeSpec(channels=256, stride=s) for s in (8, 16, 32, 64, 128)],
        num_classes="${..transformer.num_classes}",
        num_convs=1,
        anchor_scale=8.0,
        topk=9,
        loss_weights={"loss_cls": 1.0, "loss_bbox": 2.0, "loss_centerness": 1.0},
    ),
    rpn=L(RPN)(
        in_features=["p3", "p4", "p5", "p6", "p7"],
        head=L(StandardRPNHead)(in_channels=256, num_anchors=9),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=L(octave_anchor_sizes)(
                strides="${..strides}", octave_base_scale=4.0, scales_per_octave=3
            ),
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128],
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
    ),
    roi_heads=L(CoStandardROIHeads)(
        num_classes="${..transformer.num_classes}",
        batch_size_per_image=512,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(
            thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False
        ),
        # the authors' featmap_strides [8, 16, 32, 64] with finest_scale 112 = detectron2's
        # canonical 224 / level 4 over these levels
        box_in_features=["p3", "p4", "p5", "p6"],
        box_pooler=L(ROIPooler)(
            output_size=7,
            scales=[1.0 / s for s in (8, 16, 32, 64)],
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=L(FastRCNNConvFCHead)(
            input_shape=ShapeSpec(channels=256, height=7, width=7),
            conv_dims=[],
            fc_dims=[1024, 1024],
        ),
        box_predictor=L(FastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=1024),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(10, 10, 5, 5)),
            num_classes="${..num_classes}",
            box_reg_loss_type="giou",
            loss_weight={"loss_box_reg": 10.0},
        ),
    ),
    lambda1=1.0,
    lambda2=2.0,
    max_positive_queries=300,
    min_positive_queries=9,
    with_coord_feat=True,
    head_embed="scalar",
)
