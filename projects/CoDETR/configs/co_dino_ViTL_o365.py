"""Co-DINO-5scale ViT-L pretraining on Objects365 v2 (365 classes), the first stage of the
ViT-L recipe; co_dino_ViTL_coco.py fine-tunes its weights on COCO.

The authors released no Objects365 pretraining config (only the resulting checkpoints). This
config is co_dino_ViTL_coco.py (model, augmentation, optimiser: every value of the authors'
fine-tuning config) on Objects365 v2 with 365 classes, from MAE's ImageNet ViT-L; its length,
22 epochs at batch 16 without an lr step, follows the name of the authors' Objects365
checkpoint of their Swin-L recipe (co_dino_5scale_swin_large_16e_o365tococo's load_from), not a
released schedule."""

from .co_dino_ViTL_coco import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = "objects365_v2_train"
dataloader.test.dataset.names = "objects365_v2_val"
model.transformer.num_classes = 365
# 22 epochs of Objects365 v2 train (about 1.74M images) at batch 16
train.max_iter = 2_395_000
lr_multiplier.steps = ()
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_large.pth?matching_heuristics=True"
)
train.allow_partial_init = True  # the ViT only
train.output_dir = "output/co_dino_ViTL_o365"
