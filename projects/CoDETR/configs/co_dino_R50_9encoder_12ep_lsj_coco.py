"""Co-DINO-5scale R-50 with 9 encoder layers, 12 epochs with LSJ (Co-DETR's
co_dino_5scale_9encoder_lsj_r50_1x_coco, 52.6 AP in the authors' README):
co_dino_R50_12ep_lsj_coco.py with 9 transformer encoder layers instead of 6.

The authors also run all 9 encoder layers under activation checkpointing (with_cp=9), which
saves memory and changes no value; d2ext's encoder has no checkpointing."""

from .co_dino_R50_12ep_lsj_coco import dataloader, lr_multiplier, model, optimizer, train

model.transformer.num_encoder_layers = 9
train.output_dir = "output/co_dino_R50_9encoder_12ep_lsj_coco"
