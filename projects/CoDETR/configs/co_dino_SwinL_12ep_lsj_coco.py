"""Co-DINO-5scale Swin-L, 12 epochs on COCO with large-scale jittering at 1280 and copy-paste
(Co-DETR's co_dino_5scale_lsj_swin_large_1x_coco, 59.3 AP in the authors' README):
co_dino_SwinL_12ep_coco.py (drop path 0.3) with configs/common/data/coco_lsj.py at
1280 x 1280, train and test; lr x0.1 after epoch 11."""

from d2ext.model_zoo import get_config

from .co_dino_SwinL_12ep_coco import lr_multiplier, model, optimizer, train

dataloader = get_config("common/data/coco_lsj.py").dataloader
dataloader.train.mapper.augmentations.image_size = 1280
dataloader.test.mapper.augmentations.image_size = 1280
train.output_dir = "output/co_dino_SwinL_12ep_lsj_coco"
