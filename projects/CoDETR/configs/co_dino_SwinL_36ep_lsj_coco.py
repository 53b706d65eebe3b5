"""Co-DINO-5scale Swin-L, 36 epochs on COCO with large-scale jittering at 1280 and copy-paste
(Co-DETR's co_dino_5scale_lsj_swin_large_3x_coco, 60.7 AP in the authors' README):
co_dino_SwinL_12ep_coco.py with drop path 0.5, configs/common/data/coco_lsj.py at 1280 x 1280
(train and test), lr x0.1 after epoch 30."""

from d2ext.model_zoo import get_config

from .co_dino_SwinL_12ep_coco import lr_multiplier, model, optimizer, train

model.backbone.drop_path_rate = 0.5
dataloader = get_config("common/data/coco_lsj.py").dataloader
dataloader.train.mapper.augmentations.image_size = 1280
dataloader.test.mapper.augmentations.image_size = 1280
# 36 epochs of COCO train2017 (117k images) at batch 16; lr x0.1 after epoch 30
train.max_iter = 264000
lr_multiplier.steps = (30 / 36,)
train.output_dir = "output/co_dino_SwinL_36ep_lsj_coco"
