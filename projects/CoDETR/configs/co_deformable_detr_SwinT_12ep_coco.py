"""Co-Deformable-DETR with detectron2's Swin-T backbone (C3-C5 = Swin stages 2-4), 12 epochs
on COCO; weight decay 0.05 (the authors' co_deformable_detr_swin_tiny_1x_coco), everything else
as co_deformable_detr_R50_12ep_coco.py. For Swin-L set embed_dim=192,
depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48) and the neck's input channels (384, 768, 1536)."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.swin import SwinTransformer

from .co_deformable_detr_R50_12ep_coco import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(SwinTransformer)(
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window_size=7,
    drop_path_rate=0.2,
    out_indices=(1, 2, 3),
)
model.neck.input_shapes = {
    "p1": ShapeSpec(channels=192, stride=8),
    "p2": ShapeSpec(channels=384, stride=16),
    "p3": ShapeSpec(channels=768, stride=32),
}
model.neck.in_features = ["p1", "p2", "p3"]
optimizer.weight_decay = 0.05
# ImageNet Swin-T as detectron2's ViTDet Swin configs load it (RGB, torchvision statistics)
train.init_checkpoint = "detectron2://ImageNetPretrained/swin/swin_tiny_patch4_window7_224.pth"
train.output_dir = "output/co_deformable_detr_SwinT_12ep_coco"
