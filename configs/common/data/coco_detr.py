"""COCO 2017 detection data with the DETR family's training augmentation (Deformable DETR /
Co-DETR authors), RGB, batch 16: flip, then either a multi-scale resize or a crop followed by
one (here: the crop applied with probability 0.5 before the resize, detectron2 having no
one-of-two choice of augmentation lists)."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.RandomApply)(
        tfm_or_aug=L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)), prob=0.5
    ),
    L(T.ResizeShortestEdge)(
        short_edge_length=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
        max_size=1333,
        sample_style="choice",
    ),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 16
