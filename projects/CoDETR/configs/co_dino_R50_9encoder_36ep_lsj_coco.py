"""Co-DINO-5scale R-50 with 9 encoder layers, 36 epochs with LSJ (Co-DETR's
co_dino_5scale_9encoder_lsj_r50_3x_coco, 55.4 AP in the authors' README):
co_dino_R50_9encoder_12ep_lsj_coco.py, lr x0.1 after epoch 30."""

from .co_dino_R50_9encoder_12ep_lsj_coco import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

# 36 epochs of COCO train2017 (117k images) at batch 16; lr x0.1 after epoch 30
train.max_iter = 264000
lr_multiplier.steps = (30 / 36,)
train.output_dir = "output/co_dino_R50_9encoder_36ep_lsj_coco"
