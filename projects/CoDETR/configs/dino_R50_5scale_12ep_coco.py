"""DINO-5scale R-50, 12 epochs on COCO: dino_R50_4scale_12ep_coco.py on C2-C5 + one extra
level (configs/common/models/dino_5scale.py), the base detector of co_dino_R50_12ep_coco.py."""

from d2ext.model_zoo import get_config

from .dino_R50_4scale_12ep_coco import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/dino_5scale.py").model
train.output_dir = "output/dino_R50_5scale_12ep_coco"
