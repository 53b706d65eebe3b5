"""Co-DINO-5scale Swin-L, 24 epochs on COCO with the DETR augmentation (Co-DETR's
co_dino_5scale_swin_large_2x_coco, 59.8 AP in the authors' README):
co_dino_SwinL_12ep_coco.py with drop path 0.5, lr x0.1 after epoch 20."""

from .co_dino_SwinL_12ep_coco import dataloader, lr_multiplier, model, optimizer, train

model.backbone.drop_path_rate = 0.5
# 24 epochs of COCO train2017 (117k images) at batch 16; lr x0.1 after epoch 20
train.max_iter = 176000
lr_multiplier.steps = (20 / 24,)
train.output_dir = "output/co_dino_SwinL_24ep_coco"
