"""Co-DINO-5scale R-50 (Co-DETR's co_dino_5scale_r50_1x_coco): the DINO-5scale base detector
of configs/common/models/dino_5scale.py plus Co-DETR's multi-scale adapter (strides 4-128), the
ATSS and Faster R-CNN auxiliary heads and their positive queries.

Authors' values: 900 queries, 100 denoising queries (label noise 0.5, box noise 1.0), N(0, 1)
content queries; auxiliary heads as common/codetr.py on six levels (RPN / ATSS strides 4-128),
RoI pooling over strides 4-64 (finest_scale 56 = detectron2's canonical 224 / level 4);
aux losses x12 (lambda2 2 x 6 layers), lambda1 1; positive queries without the feature term
(with_coord_feat=False) and without a head embedding; at test the top 900 (query, class)
pairs, class-wise soft-NMS at IoU 0.8, at most 300 detections.
"""

from detectron2.layers import ShapeSpec

from d2ext.model_zoo import get_config
from d2ext.projects.codetr import CoDINO

from .codetr import model as _co

STRIDES = [4, 8, 16, 32, 64, 128]

model = get_config("common/models/dino_5scale.py").model
model._target_ = CoDINO
model.transformer.xavier_query_embed = False
for key in (
    "adapter",
    "atss_head",
    "rpn",
    "roi_heads",
    "lambda1",
    "lambda2",
    "max_positive_queries",
    "min_positive_queries",
):
    model[key] = _co[key]
model.adapter.strides = STRIDES[:-1]
model.atss_head.input_shape = [ShapeSpec(channels=256, stride=s) for s in STRIDES]
model.rpn.in_features = [f"p{int(s).bit_length() - 1}" for s in STRIDES]
model.rpn.anchor_generator.strides = STRIDES
model.roi_heads.box_in_features = [f"p{int(s).bit_length() - 1}" for s in STRIDES[:-1]]
model.roi_heads.box_pooler.scales = [1.0 / s for s in STRIDES[:-1]]
model.with_coord_feat = False
model.head_embed = None
model.num_detections = 300
model.num_preselect = 900
model.soft_nms_iou = 0.8
model.criterion.class_loss = "quality_focal"
model.criterion.qfl_beta = 2.0
