"""Co-DINO-5scale R-50, 12 epochs on LVIS v1 with box supervision only and the DETR
augmentation (Co-DETR's co_dino_5scale_r50_1x_lvis): co_dino_R50_12ep_coco.py with 1203 classes
in every head, LVIS v1 train with repeat-factor sampling at 1e-3 (the authors'
ClassBalancedDataset oversample_thr), the LVIS evaluator at 300 detections per image.
Iterations: 12 passes over the 100k training images at batch 16 (the authors' epochs count the
repeated images too, so their schedule is longer). The test mapper reads RGB like the
training one."""

from d2ext.model_zoo import get_config

from .co_dino_R50_12ep_coco import lr_multiplier, model, optimizer, train

dataloader = get_config("common/data/lvis.py").dataloader
_detr = get_config("common/data/coco_detr.py").dataloader
dataloader.train.mapper = _detr.train.mapper
dataloader.train.total_batch_size = 16
dataloader.train.dataset.filter_empty = False
model.transformer.num_classes = 1203
train.max_iter = 75000
lr_multiplier.steps = (11 / 12,)
train.output_dir = "output/co_dino_R50_12ep_lvis"
