"""Co-DINO-5scale R-50, 36 epochs on COCO with large-scale jittering at 1024 and copy-paste
(Co-DETR's co_dino_5scale_lsj_r50_3x_coco, 54.8 AP in the authors' README):
co_dino_R50_12ep_lsj_coco.py, lr x0.1 after epoch 30."""

from .co_dino_R50_12ep_lsj_coco import dataloader, lr_multiplier, model, optimizer, train

# 36 epochs of COCO train2017 (117k images) at batch 16; lr x0.1 after epoch 30
train.max_iter = 264000
lr_multiplier.steps = (30 / 36,)
train.output_dir = "output/co_dino_R50_36ep_lsj_coco"
