"""Augmentations detectron2 does not have."""

from collections.abc import Sequence

import numpy as np
from detectron2.data import transforms as T

__all__ = [
    "DETR_SCALES",
    "PadToSize",
    "RandomChoice",
    "lsj_augmentations",
    "lsj_test_augmentations",
    "random_colour_op",
    "resize_or_crop_resize",
]

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


class PadToSize(T.Augmentation):
    """Pads the image on the bottom and right to ``(height, width)`` (mmdetection's
    ``Pad(size=...)``): the image with ``pad_value``, segmentation maps and masks with
    ``seg_pad_value``; boxes do not move. A side already at least that long is left as is."""

    def __init__(self, height: int, width: int, pad_value: float = 114.0, seg_pad_value: int = 0):
        super().__init__()
        if height <= 0 or width <= 0:
            raise ValueError(f"PadToSize needs a positive size, got {(height, width)}")
        self.height, self.width = int(height), int(width)
        self.pad_value, self.seg_pad_value = pad_value, seg_pad_value

    def get_transform(self, image: np.ndarray) -> T.Transform:
        """
        Args:
            image: [H, W(, C)] the image to pad.

        Returns:
            Transform: a ``PadTransform`` to ``(height, width)`` (bottom and right).
        """
        h, w = image.shape[:2]
        return T.PadTransform(
            0,
            0,
            max(self.width - w, 0),
            max(self.height - h, 0),
            orig_w=w,
            orig_h=h,
            pad_value=self.pad_value,
            seg_pad_value=self.seg_pad_value,
        )


def lsj_augmentations(
    image_size: int = 1024,
    *,
    min_scale: float = 0.1,
    max_scale: float = 2.0,
    pad_value: float = 114.0,
    horizontal_flip: bool = True,
) -> list[T.Augmentation]:
    """Large-scale jittering as Co-DINO's LSJ configs write it (``co_dino_5scale_lsj_*``, after
    mmdetection's ``Resize(img_scale=(S, S), ratio_range=(0.1, 2.0), keep_ratio=True)``,
    ``RandomCrop(crop_type='absolute_range', crop_size=(S, S))``, ``RandomFlip(0.5)``,
    ``Pad(size=(S, S), pad_val=114)``):

    1. resize keeping the aspect ratio so that the long side is ``S * r``, r ~ U(min_scale,
       max_scale) (detectron2's ``ResizeScale`` on an S x S target);
    2. crop a random S x S window where the image is larger (each side min(side, S); offsets
       drawn independently, as mmdetection's ``RandomCrop``: detectron2's
       ``RandomCrop("absolute", (S, S))``);
    3. horizontal flip with probability 0.5;
    4. pad to S x S on the bottom and right with ``pad_value`` (:class:`PadToSize`), after the
       flip as in the authors' order.

    Boxes are cropped and clipped by detectron2's mapper; recomputing them from the masks and
    dropping the small ones is the mapper's part
    (:class:`d2ext.data.copy_paste.LSJCopyPasteDatasetMapper`).

    Args:
        image_size: S, the side of the square output (1024 for the R-50 recipes; 1280 / 1536
            for the Swin-L / ViT-L ones).
        min_scale, max_scale: the range of r.
        pad_value: the image padding value (the authors' 114 on every channel).
        horizontal_flip: include the flip.

    Returns:
        list[Augmentation]: for a detectron2 ``DatasetMapper``.
    """
    if image_size <= 0 or not 0 < min_scale <= max_scale:
        raise ValueError(
            f"lsj_augmentations needs image_size > 0 and 0 < min_scale <= max_scale, got "
            f"{image_size}, {min_scale}, {max_scale}"
        )
    augs = [
        T.ResizeScale(min_scale, max_scale, image_size, image_size),
        T.RandomCrop("absolute", (image_size, image_size)),
    ]
    if horizontal_flip:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    augs.append(PadToSize(image_size, image_size, pad_value=pad_value))
    return augs


def lsj_test_augmentations(image_size: int = 1024) -> list[T.Augmentation]:
    """The LSJ configs' test resize: the long side to ``image_size``, aspect kept
    (mmdetection's ``Resize(img_scale=(S, S), keep_ratio=True)``). The authors then pad to
    S x S with 114; here the image stays unpadded so that detectron2's ``detector_postprocess``
    maps boxes back to the original size, and the model pads the batch itself.

    Args:
        image_size: S.

    Returns:
        list[Augmentation]: for a detectron2 ``DatasetMapper``.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return [T.ResizeScale(1.0, 1.0, image_size, image_size)]
