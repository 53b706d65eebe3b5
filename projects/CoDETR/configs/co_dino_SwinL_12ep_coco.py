"""Co-DINO-5scale Swin-L (ImageNet-22k, 384, window 12), 12 epochs on COCO with the DETR
augmentation (Co-DETR's co_dino_5scale_swin_large_1x_coco, 58.9 AP in the authors' README):
co_dino_R50_12ep_coco.py with detectron2's Swin-L (embed 192, depths 2-2-18-2, heads 6-12-24-48,
drop path 0.3, all four stages: strides 4-32), batch 16 (1 image x 16 GPUs), AdamW 2e-4,
wd 1e-4."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.swin import SwinTransformer

from .co_dino_R50_12ep_coco import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(SwinTransformer)(
    pretrain_img_size=384,
    embed_dim=192,
    depths=(2, 2, 18, 2),
    num_heads=(6, 12, 24, 48),
    window_size=12,
    drop_path_rate=0.3,
    out_indices=(0, 1, 2, 3),
)
model.neck.input_shapes = {
    f"p{i}": ShapeSpec(channels=192 * 2**i, stride=4 * 2**i) for i in range(4)
}
model.neck.in_features = ["p0", "p1", "p2", "p3"]
# ImageNet-22k Swin-L as detectron2's ViTDet Swin configs load it (RGB, torchvision statistics)
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/swin/swin_large_patch4_window12_384_22k.pth"
)
train.output_dir = "output/co_dino_SwinL_12ep_coco"
