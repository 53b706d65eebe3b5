"""DINO-5scale R-50: configs/common/models/dino.py on C2-C5 + one extra level (strides 4-64,
5 feature levels), the base detector of Co-DINO (Co-DETR's co_dino_5scale_r50_1x_coco)."""

from detectron2.layers import ShapeSpec

from d2ext.model_zoo import get_config

model = get_config("common/models/dino.py").model
model.backbone.out_features = ["res2", "res3", "res4", "res5"]
model.neck.input_shapes = {
    "res2": ShapeSpec(channels=256, stride=4),
    "res3": ShapeSpec(channels=512, stride=8),
    "res4": ShapeSpec(channels=1024, stride=16),
    "res5": ShapeSpec(channels=2048, stride=32),
}
model.neck.in_features = ["res2", "res3", "res4", "res5"]
model.transformer.n_levels = 5
