"""ScaleDet full scale with detectron2's Swin-B (window 7, 224 ImageNet-22k weights given as a
local path) instead of ResNet-50; AdamW 1e-4, weight decay 0.05. Everything else as the R50
config."""

from detectron2.config import LazyCall as L
from detectron2.modeling import SwinTransformer
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from d2ext.model_zoo import get_config

from .scaledet_R50_FPN_cascade_lvis_coco_o365_oid import (
    dataloader,
    lr_multiplier,
    model,
    scaledet,
    train,
)

optimizer = get_config("common/optim.py").AdamW

model.backbone = L(FPN)(
    bottom_up=L(SwinTransformer)(
        embed_dim=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        window_size=7,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
    ),
    in_features=["p0", "p1", "p2", "p3"],
    out_channels=256,
    top_block=L(LastLevelMaxPool)(),
)
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
dataloader.train.mapper.image_format = "RGB"  # the test mappers follow
optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
train.init_checkpoint = ""  # a local Swin-B checkpoint converted to detectron2 keys
train.output_dir = "output/scaledet_SwinB_FPN_cascade_lvis_coco_o365_oid"
