"""SoCo's three-view mapper: views, colour augmentation, proposal selection, jitter, levels.

Box conventions: proposals come as inclusive-pixel XYXY boxes of the original image (x2 is
the last pixel, as selective search reports them), the form SoCo jitters. In the output every
box is continuous XYXY in its view's pixels (x2 = last pixel + 1), the form RoIAlign and
detectron2 use, so a box's width there is SoCo's inclusive width scaled to the view.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchvision.transforms as T
from detectron2.data import detection_utils as utils
from PIL import Image

from d2ext.layers import SOCO_THRESHOLDS, assign_levels_soco, box_jitter

__all__ = ["SoCoDatasetMapper", "byol_colour_augmentation"]


def byol_colour_augmentation(blur_prob: float, solarize_prob: float) -> T.Compose:
    """BYOL's asymmetric colour augmentation for one view (PIL image in, PIL image out)."""
    return T.Compose(
        [
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=blur_prob),
            T.RandomSolarize(128, p=solarize_prob),
        ]
    )


def _crop_params(height, width, scale, ratio) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop (torchvision's sampling, torch's RNG)."""
    dummy = torch.empty(1, height, width)
    return T.RandomResizedCrop.get_params(dummy, list(scale), list(ratio))


def _overlaps(boxes: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """Which inclusive XYXY boxes overlap the crop (strictly, as SoCo tests it)."""
    top, left, h, w = crop
    x1, y1, x2, y2 = left, top, left + w - 1, top + h - 1
    return (x1 < boxes[:, 2]) & (boxes[:, 0] < x2) & (y1 < boxes[:, 3]) & (boxes[:, 1] < y2)


def _clip_to_image(boxes: np.ndarray, height: int, width: int):
    """Inclusive XYXY boxes clipped to the image, and which still have a pixel."""
    out = boxes.copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width - 1)
    out[:, 1::2] = out[:, 1::2].clip(0, height - 1)
    return out, (out[:, 2] >= out[:, 0]) & (out[:, 3] >= out[:, 1])


def _to_view(boxes: np.ndarray, crop, out_h: int, out_w: int, flip: bool):
    """Inclusive image boxes -> continuous boxes in the view's pixels, and which are inside."""
    top, left, h, w = crop
    x1 = np.clip(boxes[:, 0], left, left + w)
    y1 = np.clip(boxes[:, 1], top, top + h)
    x2 = np.clip(boxes[:, 2] + 1, left, left + w)
    y2 = np.clip(boxes[:, 3] + 1, top, top + h)
    valid = (x2 > x1) & (y2 > y1)
    sx, sy = out_w / w, out_h / h
    out = np.stack([(x1 - left) * sx, (y1 - top) * sy, (x2 - left) * sx, (y2 - top) * sy], 1)
    if flip:
        out = np.stack([out_w - out[:, 2], out[:, 1], out_w - out[:, 0], out[:, 3]], 1)
    out[~valid] = 0.0
    return out.astype(np.float32), valid


class SoCoDatasetMapper:
    """Maps a dataset dict with selective-search proposals to SoCo's three views.

    V1 is the whole image resized to ``view_size`` squared; V2 a random-resized crop
    (``crop_scale``) resized to ``view_size``; V3 an independent random-resized crop resized
    to ``small_view_size`` (the authors' code), or with ``small_view="downsample"`` V2 itself
    downsampled (the paper's text). Each view is flipped with ``flip_prob`` and colour
    augmented as BYOL does asymmetrically (blur 1.0 on V1, 0.1 on V2/V3; solarize 0.2 on
    V2/V3 only).

    Per image ``num_boxes`` proposals that overlap both crops are drawn (without replacement,
    padded by drawing again with replacement when fewer exist); when none overlap, the crops
    are drawn again, up to ``max_tries`` times, and after that the overlap of the two crops
    (or V2's crop) is used as the one proposal. The V1 copies are jittered with
    :func:`d2ext.layers.box_jitter` (``jitter_prob``, ``jitter_ratio``) and clipped to the
    image (a jittered box left empty keeps its unjittered form). Each box gets, per view, its
    level by SoCo's rule (:func:`d2ext.layers.assign_levels_soco` on its size in that view);
    -1 marks a box outside the view or larger than the last threshold, which the loss skips.

    Returns dicts with ``views`` (3 uint8 CHW tensors in ``image_format``), ``boxes`` (3 float32
    [K, 4] tensors, continuous XYXY in view pixels), ``levels`` (3 int64 [K] tensors) and the
    input's ``file_name`` / ``image_id``.
    """

    def __init__(
        self,
        *,
        proposals: Callable[[dict], np.ndarray],
        view_size: int = 224,
        small_view_size: int = 112,
        crop_scale: Sequence[float] = (0.5, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        small_view: str = "crop",
        num_boxes: int = 4,
        max_tries: int = 5,
        jitter_prob: float = 0.5,
        jitter_ratio: float = 0.1,
        level_thresholds: Sequence[float] = SOCO_THRESHOLDS,
        flip_prob: float = 0.5,
        colour_augmentation: bool = True,
        image_format: str = "BGR",
    ):
        if small_view not in ("crop", "downsample"):
            raise ValueError(f"small_view must be 'crop' or 'downsample', got {small_view!r}")
        if num_boxes < 1 or max_tries < 1:
            raise ValueError("num_boxes and max_tries must be >= 1")
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image_format must be BGR or RGB, got {image_format!r}")
        self.proposals = proposals
        self.sizes = (view_size, view_size, small_view_size)
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.small_view = small_view
        self.num_boxes, self.max_tries = num_boxes, max_tries
        self.jitter_prob, self.jitter_ratio = jitter_prob, jitter_ratio
        self.level_thresholds = tuple(level_thresholds)
        self.flip_prob = flip_prob
        self.image_format = image_format
        self.colour = None
        if colour_augmentation:
            self.colour = [
                byol_colour_augmentation(1.0, 0.0),
                byol_colour_augmentation(0.1, 0.2),
                byol_colour_augmentation(0.1, 0.2),
            ]

    def _proposals(self, dataset_dict: dict, height: int, width: int) -> np.ndarray:
        boxes = np.asarray(self.proposals(dataset_dict), dtype=np.float32).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{dataset_dict.get('file_name')}: proposals contain NaN or Inf")
        boxes, keep = _clip_to_image(boxes, height, width)
        return boxes[keep]

    def select(self, proposals: np.ndarray, height: int, width: int):
        """(V2 crop, V3 crop, [K, 4] selected inclusive boxes) as described in the class."""
        for _ in range(self.max_tries):
            crop2 = _crop_params(height, width, self.crop_scale, self.crop_ratio)
            crop3 = (
                crop2
                if self.small_view == "downsample"
                else _crop_params(height, width, self.crop_scale, self.crop_ratio)
            )
            common = proposals[_overlaps(proposals, crop2) & _overlaps(proposals, crop3)]
            if len(common):
                break
        if len(common) == 0:  # no proposal in both crops: their overlap, else V2's crop
            t2, l2, h2, w2 = crop2
            t3, l3, h3, w3 = crop3
            x1, y1 = max(l2, l3), max(t2, t3)
            x2, y2 = min(l2 + w2, l3 + w3) - 1, min(t2 + h2, t3 + h3) - 1
            if x2 < x1 or y2 < y1:
                x1, y1, x2, y2 = l2, t2, l2 + w2 - 1, t2 + h2 - 1
            common = np.array([[x1, y1, x2, y2]], np.float32)
        n, k = len(common), self.num_boxes
        if n >= k:
            idx = torch.randperm(n)[:k]
        else:
            idx = torch.cat([torch.arange(n), torch.randint(n, (k - n,))])
        return crop2, crop3, common[idx.numpy()]

    def _render(self, image: Image.Image, crop, size: int, flip: bool, view: int) -> torch.Tensor:
        top, left, h, w = crop
        img = image.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.colour is not None:
            img = self.colour[view](img)
        arr = np.asarray(img.convert("RGB"))
        if self.image_format == "BGR":
            arr = arr[:, :, ::-1]
        return torch.as_tensor(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __call__(self, dataset_dict: dict) -> dict:
        image = utils.read_image(dataset_dict["file_name"], format="RGB")
        utils.check_image_size(dataset_dict, image)
        height, width = image.shape[:2]
        pil = Image.fromarray(image)
        proposals = self._proposals(dataset_dict, height, width)
        crop2, crop3, selected = self.select(proposals, height, width)
        jittered = box_jitter(torch.from_numpy(selected), self.jitter_prob, self.jitter_ratio)
        # Clip the jittered V1 boxes to the image; one jittered out of it keeps its old form.
        clipped, keep = _clip_to_image(jittered.numpy(), height, width)
        clipped[~keep] = selected[~keep]
        crops = ((0, 0, height, width), crop2, crop3)
        view_boxes = (clipped, selected, selected)
        out = {"file_name": dataset_dict["file_name"], "views": [], "boxes": [], "levels": []}
        if "image_id" in dataset_dict:
            out["image_id"] = dataset_dict["image_id"]
        for v, (crop, size, boxes) in enumerate(zip(crops, self.sizes, view_boxes)):
            flip = bool(torch.rand(()) < self.flip_prob)
            mapped, valid = _to_view(boxes, crop, size, size, flip)
            mapped_t = torch.from_numpy(mapped)
            levels = assign_levels_soco(mapped_t, self.level_thresholds, inclusive=False)
            levels[~torch.from_numpy(valid)] = -1
            out["views"].append(self._render(pil, crop, size, flip, v))
            out["boxes"].append(mapped_t)
            out["levels"].append(levels)
        return out
