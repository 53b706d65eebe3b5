"""Co-DINO-5scale R-50, 12 epochs on COCO with the DETR augmentation (Co-DETR's
co_dino_5scale_r50_1x_coco, 52.1 AP in the authors' README): common/codino.py, the two
AutoAugment policies, images without objects kept, AdamW 2e-4, wd 1e-4, lr x0.1 for the
backbone only (their custom_keys), gradients clipped to 0.1, batch 16, lr x0.1 after epoch 11.
Evaluation runs the DINO base detector only (top 900 pairs, soft-NMS 0.8, 300 detections)."""

from .common.codino import model
from .dino_R50_4scale_12ep_coco import dataloader, lr_multiplier, optimizer, train

optimizer.lr = 2e-4
train.output_dir = "output/co_dino_R50_12ep_coco"
