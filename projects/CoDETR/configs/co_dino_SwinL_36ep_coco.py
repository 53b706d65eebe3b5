"""Co-DINO-5scale Swin-L, 36 epochs on COCO with the DETR augmentation (Co-DETR's
co_dino_5scale_swin_large_3x_coco, 60.0 AP in the authors' README):
co_dino_SwinL_12ep_coco.py with drop path 0.6, lr x0.1 after epoch 30."""

from .co_dino_SwinL_12ep_coco import dataloader, lr_multiplier, model, optimizer, train

model.backbone.drop_path_rate = 0.6
# 36 epochs of COCO train2017 (117k images) at batch 16; lr x0.1 after epoch 30
train.max_iter = 264000
lr_multiplier.steps = (30 / 36,)
train.output_dir = "output/co_dino_SwinL_36ep_coco"
