"""AlignDet's colour augmentation: one of nine RandAug operations per view, each with a random
magnitude (the authors' ``OneOf`` over ``Identity``, ``AutoContrast``, ``RandEqualize``,
``RandSolarize``, ``RandColor``, ``RandContrast``, ``RandBrightness``, ``RandSharpness``,
``RandPosterize``; liming-ai/AlignDet ``AlignDet/datasets/pipelines/rand_aug.py``, itself from
google-research/ssl_detection).

Every operation draws its magnitude m uniformly in {1, ..., ``magnitude_limit`` - 1} (numpy's
``randint(1, 10)``, the authors' default) and maps it as the authors do:

- Solarize: pixels >= ``min(int(m * 256 / 10), 255)`` become 255 - pixel (mmcv.solarize);
- Color, Contrast, Brightness, Sharpness: PIL ``ImageEnhance`` with factor m * 1.8 / 10 + 0.1;
- Posterize: PIL ``ImageOps.posterize`` keeping ``4 - int(m * 4 / 10)`` bits;
- AutoContrast, Equalize: PIL ``ImageOps``, no magnitude; Identity: nothing.

PIL operations run on RGB: a BGR image (detectron2's default format) is flipped to RGB and back,
as the authors flip mmcv's BGR images.
"""

from collections.abc import Callable

import numpy as np
from detectron2.data import transforms as T
from PIL import Image, ImageEnhance, ImageOps

from d2ext.data.transforms import RandomChoice

__all__ = ["RANDAUG_COLOUR_OPS", "RandAugColour", "aligndet_colour_augmentation"]

PARAMETER_MAX = 10


def _pil(fn: Callable[[Image.Image, int], Image.Image]):
    def apply(img: np.ndarray, m: int, rgb: bool) -> np.ndarray:
        x = img if rgb else img[:, :, ::-1]
        out = np.asarray(fn(Image.fromarray(np.ascontiguousarray(x)), m), dtype=img.dtype)
        return out if rgb else out[:, :, ::-1]

    return apply


def _enhance(enhancer):
    return _pil(lambda im, m: enhancer(im).enhance(m * 1.8 / PARAMETER_MAX + 0.1))


def _solarize(img: np.ndarray, m: int, rgb: bool) -> np.ndarray:
    threshold = min(int(m * 256 / PARAMETER_MAX), 255)
    return np.where(img < threshold, img, 255 - img).astype(img.dtype)


# name -> f(image uint8 HWC, magnitude, image is RGB) -> image
RANDAUG_COLOUR_OPS: dict[str, Callable[[np.ndarray, int, bool], np.ndarray]] = {
    "Identity": lambda img, m, rgb: img,
    "AutoContrast": _pil(lambda im, m: ImageOps.autocontrast(im)),
    "RandEqualize": _pil(lambda im, m: ImageOps.equalize(im)),
    "RandSolarize": _solarize,
    "RandColor": _enhance(ImageEnhance.Color),
    "RandContrast": _enhance(ImageEnhance.Contrast),
    "RandBrightness": _enhance(ImageEnhance.Brightness),
    "RandSharpness": _enhance(ImageEnhance.Sharpness),
    "RandPosterize": _pil(lambda im, m: ImageOps.posterize(im, 4 - int(m * 4 / PARAMETER_MAX))),
}


class RandAugColour(T.Augmentation):
    """One of the authors' RandAug colour operations with a magnitude drawn per image.

    Args:
        op: a key of :data:`RANDAUG_COLOUR_OPS`.
        magnitude_limit: the magnitude is drawn in [1, magnitude_limit) (authors: 10).
        image_format: "BGR" or "RGB", the order of the images it gets (uint8 HWC).
    """

    def __init__(self, op: str, magnitude_limit: int = PARAMETER_MAX, image_format: str = "BGR"):
        super().__init__()
        if op not in RANDAUG_COLOUR_OPS:
            raise ValueError(f"unknown RandAug op {op!r}; one of {sorted(RANDAUG_COLOUR_OPS)}")
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image_format must be 'BGR' or 'RGB', got {image_format!r}")
        if not 2 <= magnitude_limit <= PARAMETER_MAX:
            raise ValueError(f"magnitude_limit must be in [2, {PARAMETER_MAX}]")
        self.op = op
        self.magnitude_limit = magnitude_limit
        self.image_format = image_format

    def get_transform(self, image):
        """Draws a magnitude in [1, magnitude_limit) and returns the op at that magnitude.

        Args:
            image: a uint8 [H, W, 3] image in ``image_format`` order.

        Returns:
            ColorTransform: the op applied to an image.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"{self.op} needs a uint8 HxWx3 image, got {image.dtype} {image.shape}"
            )
        m = int(np.random.randint(1, self.magnitude_limit))
        fn, rgb = RANDAUG_COLOUR_OPS[self.op], self.image_format == "RGB"
        return T.ColorTransform(lambda img: fn(img, m, rgb))


def aligndet_colour_augmentation(
    ops=tuple(RANDAUG_COLOUR_OPS), magnitude_limit: int = PARAMETER_MAX, image_format: str = "BGR"
) -> RandomChoice:
    """The authors' colour step: one of ``ops`` drawn uniformly per view.

    Args:
        ops: names of :data:`RANDAUG_COLOUR_OPS` (default: all nine, the authors' list).
        magnitude_limit: see :class:`RandAugColour`.
        image_format: the images' channel order.

    Returns:
        a :class:`d2ext.data.transforms.RandomChoice` of :class:`RandAugColour`.
    """
    return RandomChoice([RandAugColour(op, magnitude_limit, image_format) for op in ops])
