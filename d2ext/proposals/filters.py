"""Filters of selective-search proposals, as SoCo and AlignDet apply them.

Boxes are XYWH in pixels, as the ``selectivesearch`` package returns them (``region["rect"]``).
A filter keeps boxes with

    w >= min_side and h >= min_side,
    1 / max_aspect <= w / h <= max_aspect,
    min_size_ratio <= sqrt(w * h) / sqrt(H * W) <= max_size_ratio,

all bounds inclusive, as in SoCo's code. SoCo's ``ratio3size0308`` (aspect 3, size ratio
0.3-0.8) falls back, for an image left with no box, to the side and aspect conditions alone,
then to the side condition alone. AlignDet uses the same generator with size ratio 0-0.8
(``ratio3size0008``).
"""

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["ALIGNDET_FILTER", "FILTERS", "SOCO_FILTER", "ProposalFilter", "filter_from_name"]


@dataclass(frozen=True)
class ProposalFilter:
    """Args:
    min_side: smallest width and height kept, in pixels.
    max_aspect: r in 1/r <= w/h <= r.
    min_size_ratio, max_size_ratio: bounds of sqrt(w h) / sqrt(H W).
    fallback: for an image left empty, retry with (side, aspect), then (side) alone.
    """

    min_side: float = 32.0
    max_aspect: float = 3.0
    min_size_ratio: float = 0.3
    max_size_ratio: float = 0.8
    fallback: bool = True

    def __post_init__(self):
        if self.min_side < 0 or self.max_aspect < 1:
            raise ValueError(f"need min_side >= 0 and max_aspect >= 1: {self}")
        if not 0 <= self.min_size_ratio <= self.max_size_ratio:
            raise ValueError(f"need 0 <= min_size_ratio <= max_size_ratio: {self}")

    def masks(self, boxes_xywh: np.ndarray, image_size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Boolean masks of the three conditions: "side", "aspect" (includes side), "size"."""
        boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError("proposal boxes contain NaN or Inf")
        height, width = image_size
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {image_size}")
        w, h = boxes[:, 2], boxes[:, 3]
        side = (w >= self.min_side) & (h >= self.min_side)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = w / h
            size = np.sqrt(w * h) / math.sqrt(height * width)
        aspect_ok = side & (1.0 / self.max_aspect <= aspect) & (aspect <= self.max_aspect)
        size_ok = (self.min_size_ratio <= size) & (size <= self.max_size_ratio)
        return {"side": side, "aspect": aspect_ok, "size": aspect_ok & size_ok}

    def __call__(
        self, boxes_xywh: np.ndarray, image_size: tuple[int, int]
    ) -> tuple[np.ndarray, str]:
        """Filters one image's boxes.

        Args:
            boxes_xywh: [N, 4] boxes (x, y, w, h) in pixels.
            image_size: (H, W) of the image the boxes were computed on.

        Returns:
            (kept boxes [M, 4] float32, the stage that kept them: "ratio_size", "ratio",
            "size" -- the last two only as fallbacks -- or "empty" when none is left).
        """
        boxes = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4)
        masks = self.masks(boxes, image_size)
        stages = [("ratio_size", masks["size"])]
        if self.fallback:
            stages += [("ratio", masks["aspect"]), ("size", masks["side"])]
        for stage, keep in stages:
            if keep.any():
                return boxes[keep], stage
        return boxes[:0], "empty"

    @property
    def name(self) -> str:
        """SoCo's naming, e.g. ``ratio3size0308``."""
        r = f"{self.max_aspect:g}"
        lo, hi = round(self.min_size_ratio * 10), round(self.max_size_ratio * 10)
        return f"ratio{r}size{lo:02d}{hi:02d}"


SOCO_FILTER = ProposalFilter(min_size_ratio=0.3, max_size_ratio=0.8)
ALIGNDET_FILTER = ProposalFilter(min_size_ratio=0.0, max_size_ratio=0.8)
FILTERS = {f.name: f for f in (SOCO_FILTER, ALIGNDET_FILTER)}

_NAME = re.compile(r"^ratio(\d+(?:\.\d+)?)size(\d\d)(\d\d)$")


def filter_from_name(name: str, **overrides) -> ProposalFilter:
    """``ratio{r}size{lo}{hi}`` (tenths, as SoCo names them) -> a filter; keyword overrides
    (min_side, fallback, ...) replace single settings."""
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"filter name {name!r} is not of the form ratio3size0308")
    settings = {
        "max_aspect": float(m.group(1)),
        "min_size_ratio": int(m.group(2)) / 10,
        "max_size_ratio": int(m.group(3)) / 10,
    }
    settings.update(overrides)
    return ProposalFilter(**settings)
