"""COCO 2017 detection data with the DETR family's training augmentation (Deformable DETR /
Co-DETR authors), RGB, batch 16: flip, then one of two policies drawn with equal chance
(mmdetection's AutoAugment): a resize (short side 480, 512, ..., 800, long side <= 1333), or a
resize (short side 400 / 500 / 600, long side <= 4200), a random crop of height and width each in
[384, 600], and the first policy's resize."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from d2ext.data.transforms import DETR_SCALES, resize_or_crop_resize
from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(resize_or_crop_resize)(
        scales=DETR_SCALES,
        max_size=1333,
        crop_scales=(400, 500, 600),
        crop_max_size=4200,
        crop_size=(384, 600),
        crop_type="absolute_range",
    ),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 16
