"""Augmentations detectron2 does not have."""

from collections.abc import Sequence

import numpy as np
from detectron2.data import transforms as T

__all__ = ["DETR_SCALES", "RandomChoice", "random_colour_op", "resize_or_crop_resize"]

# short sides of the DETR family's multi-scale training: 480, 512, ..., 800
DETR_SCALES = tuple(range(480, 801, 32))


class RandomChoice(T.Augmentation):
    """Applies one of ``augmentations``, drawn uniformly (numpy's RNG, like detectron2's). An
    entry may be a ``T.AugmentationList`` (a policy of several steps); that works through
    ``__call__`` (what detectron2's ``DatasetMapper`` uses), not ``get_transform``."""

    def __init__(self, augmentations: Sequence[T.Augmentation]):
        super().__init__()
        if not augmentations:
            raise ValueError("RandomChoice needs at least one augmentation")
        self.augmentations = list(augmentations)

    def get_transform(self, *args):
        """Draws one of ``augmentations`` and returns its transform.

        Args:
            args: the inputs of the drawn augmentation's ``get_transform``.

        Returns:
            Transform: the drawn augmentation's transform.
        """
        return self.augmentations[np.random.randint(len(self.augmentations))].get_transform(*args)

    def __call__(self, aug_input):
        return self.augmentations[np.random.randint(len(self.augmentations))](aug_input)


def random_colour_op(strength: float = 0.4) -> RandomChoice:
    """One random photometric operation per image: brightness, contrast or saturation scaled by
    a factor in [1 - strength, 1 + strength] (AlignDet: one random colour operation per view)."""
    lo, hi = 1.0 - strength, 1.0 + strength
    return RandomChoice(
        [T.RandomBrightness(lo, hi), T.RandomContrast(lo, hi), T.RandomSaturation(lo, hi)]
    )


def resize_or_crop_resize(
    scales: Sequence[int] = DETR_SCALES,
    max_size: int = 1333,
    crop_scales: Sequence[int] = (400, 500, 600),
    crop_max_size: int | None = None,
    crop_size: tuple[int, int] = (384, 600),
    crop_type: str = "absolute_range",
) -> RandomChoice:
    """The DETR-style training augmentation that mmdetection writes as ``AutoAugment`` with two
    policies, one drawn per image with equal chance:

    1. resize: short side drawn from ``scales``, long side at most ``max_size``, aspect kept;
    2. resize-crop-resize: short side from ``crop_scales`` (long side at most
       ``crop_max_size``, default ``max_size``), then a random crop (``crop_type`` /
       ``crop_size`` as detectron2's ``RandomCrop``; the default "absolute_range" draws the
       crop's height and width independently in [min(side, 384), min(side, 600)] and its
       offset uniformly, as mmdet's ``RandomCrop``), then policy 1's resize of the crop.

    Boxes follow detectron2's mapper: cropped, clipped to the crop; instances left empty are
    removed by ``filter_empty_instances``; a crop without any box is kept (mmdet's
    ``allow_negative_crop=True``). Defaults are imTED's / DETR's COCO values.

    Args:
        scales: short sides of the final resize (both policies).
        max_size: the long-side limit of the final resize.
        crop_scales: short sides of the resize before the crop.
        crop_max_size: the long-side limit of that resize (None: ``max_size``).
        crop_size: the crop sizes, as detectron2's ``RandomCrop(crop_type, crop_size)``.
        crop_type: detectron2's ``RandomCrop`` type.

    Returns:
        a :class:`RandomChoice` for a detectron2 augmentation list (place a ``RandomFlip``
        before or after it).
    """
    if not scales or not crop_scales:
        raise ValueError("resize_or_crop_resize needs non-empty scales and crop_scales")
    resize = T.ResizeShortestEdge(tuple(scales), max_size, sample_style="choice")
    crop = T.AugmentationList(
        [
            T.ResizeShortestEdge(
                tuple(crop_scales),
                max_size if crop_max_size is None else crop_max_size,
                sample_style="choice",
            ),
            T.RandomCrop(crop_type, tuple(crop_size)),
            T.ResizeShortestEdge(tuple(scales), max_size, sample_style="choice"),
        ]
    )
    return RandomChoice([resize, crop])
