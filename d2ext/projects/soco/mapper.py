"""SoCo's three-view mapper: views, colour augmentation, per-pair proposal selection, jitter,
clipping, padding, levels and cutout (hologerry/SoCo ``contrast/data/dataset.py:644-783``).

Box conventions: proposals come as inclusive-pixel XYXY boxes of the original image (x2 is
the last pixel, as selective search reports them), the form SoCo jitters and clips. In the
output every box is continuous XYXY in its view's pixels (x2 = last pixel + 1), the form
RoIAlign and detectron2 use, so a box's width there is SoCo's inclusive width scaled to the view.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchvision.transforms as T
from detectron2.data import detection_utils as utils
from PIL import Image

from d2ext.layers import SOCO_THRESHOLDS, assign_levels_soco, box_jitter, clip_boxes_to_view

__all__ = [
    "SOCO_BOX_LIST_VIEWS",
    "SoCoDatasetMapper",
    "byol_colour_augmentation",
    "cutout_in_boxes",
]

# The view of each of the mapper's four box lists: V1's boxes for the (V1, V2) pair, V2's, V1's
# boxes for the (V1, V3) pair, V3's.
SOCO_BOX_LIST_VIEWS = (0, 1, 0, 2)

# The ImageNet mean SoCo normalises with (RGB, 0-255): the colour of a 0 after normalisation.
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)


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


def _draw(proposals: np.ndarray, ids: np.ndarray, crop, k: int):
    """SoCo's ``select_props`` ('random'): k of the proposals that overlap the crop, without
    replacement; all of them when there are at most k."""
    mask = _overlaps(proposals, crop)
    boxes, box_ids = proposals[mask], ids[mask]
    if len(boxes) > k:
        idx = torch.randperm(len(boxes))[:k].numpy()
        boxes, box_ids = boxes[idx], box_ids[idx]
    return boxes, box_ids


def _clip(boxes: np.ndarray, ids: np.ndarray, crop, rule: str):
    """Image boxes -> crop-local inclusive boxes by :func:`clip_boxes_to_view`, with their ids;
    the fallback box (the whole crop) gets id 1, as in SoCo's ``clip_bboxs``."""
    top, left, h, w = crop
    local = torch.from_numpy(np.asarray(boxes, np.float64).reshape(-1, 4))
    local = local - local.new_tensor([left, top, left, top])
    clipped, keep = clip_boxes_to_view(local, h, w, rule=rule)
    out_ids = np.array([ids[i] if i >= 0 else 1 for i in keep.tolist()], np.int64)
    return clipped.numpy(), out_ids


def _pad(boxes: np.ndarray, ids: np.ndarray, partner_ids: np.ndarray, k: int):
    """SoCo's ``pad_bboxs_with_common``: pad to k with unjittered copies drawn (with
    replacement) among the boxes whose id the partner list also has; when the two lists share
    no id, among all the list's boxes (such copies have no partner)."""
    n = len(boxes)
    if n >= k:
        return boxes, ids
    pool = np.flatnonzero(np.isin(ids, partner_ids))
    if len(pool) == 0:
        pool = np.arange(n)
    extra = pool[torch.randint(len(pool), (k - n,)).numpy()]
    return np.concatenate([boxes, boxes[extra]]), np.concatenate([ids, ids[extra]])


def _levels(local: np.ndarray, crop, size: int, thresholds) -> torch.Tensor:
    """SoCo's level rule on a list's crop-local inclusive boxes: scaled to the view, truncated
    to integers, s = sqrt((x2 - x1 + 1)(y2 - y1 + 1)), the first level with s <= threshold;
    -1 above the last threshold or for an inverted box (no area)."""
    _, _, h, w = crop
    r = np.trunc(local * np.array([size / w, size / h, size / w, size / h]))
    ok = (r[:, 2] - r[:, 0] + 1 > 0) & (r[:, 3] - r[:, 1] + 1 > 0)
    r[~ok] = 0.0
    levels = assign_levels_soco(torch.from_numpy(r), thresholds, inclusive=True)
    levels[torch.from_numpy(~ok)] = -1
    return levels


def _to_view(local: np.ndarray, crop, size: int, flip: bool):
    """Crop-local inclusive boxes -> (continuous view boxes, SoCo's view boxes).

    The continuous boxes (x2 = last pixel + 1) are the output; SoCo's (x2 = last pixel x scale,
    its ``bboxs_to_tensor`` x view size) place the cutout."""
    _, _, h, w = crop
    sx, sy = size / w, size / h
    x1, y1, x2, y2 = local[:, 0] * sx, local[:, 1] * sy, local[:, 2] * sx, local[:, 3] * sy
    cont = np.stack([x1, y1, x2 + sx, y2 + sy], 1)
    soco = np.stack([x1, y1, x2, y2], 1)
    if flip:
        cont = np.stack([size - cont[:, 2], cont[:, 1], size - cont[:, 0], cont[:, 3]], 1)
        soco = np.stack([size - soco[:, 2], soco[:, 1], size - soco[:, 0], soco[:, 3]], 1)
    return cont.astype(np.float32), soco


def cutout_in_boxes(
    view: torch.Tensor,
    boxes: np.ndarray,
    prob: float,
    ratio: Sequence[float],
    fill: Sequence[float],
) -> torch.Tensor:
    """SoCo's ``RandomCutoutInBbox``: per box, with probability ``prob``, a square of area
    U(ratio) x the box's area ((x2 - x1 + 1)(y2 - y1 + 1)) and side round(sqrt(area)), centred
    on an integer pixel drawn uniformly in [int(x1), int(x2)] x [int(y1), int(y2)], is set to
    ``fill``; the square is cut to the view and may reach past the box.

    The authors' class draws the centre with ``random.randint`` on the float box coordinates,
    which raises for non-integral values; the integer centre inside the box is its evident
    intent.

    Args:
        view: [C, H, W] uint8 view.
        boxes: [K, 4] boxes in view pixels (SoCo's convention: x2 = last pixel x scale).
        prob, ratio: SoCo's ``cutout_prob`` (0.5) and (``cutout_ratio_min``,
            ``cutout_ratio_max``) (0.1, 0.3).
        fill: per-channel fill value in the view's channel order.

    Returns:
        a new [C, H, W] uint8 tensor.
    """
    out = view.clone()
    _, height, width = view.shape
    fill_t = torch.tensor([round(f) for f in fill], dtype=view.dtype)[:, None, None]
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).tolist():
        if float(torch.rand(())) >= prob:
            continue
        area = max((x2 - x1 + 1) * (y2 - y1 + 1), 0.0)
        target = (ratio[0] + (ratio[1] - ratio[0]) * float(torch.rand(()))) * area
        side = int(round(target**0.5))
        lo_x, hi_x = sorted((int(x1), int(x2)))
        lo_y, hi_y = sorted((int(y1), int(y2)))
        cx = int(torch.randint(lo_x, hi_x + 1, ()))
        cy = int(torch.randint(lo_y, hi_y + 1, ()))
        xa, xb = max(cx - side // 2, 0), min(cx + side // 2, width - 1)
        ya, yb = max(cy - side // 2, 0), min(cy + side // 2, height - 1)
        if xb >= xa and yb >= ya:
            out[:, ya : yb + 1, xa : xb + 1] = fill_t
    return out


class SoCoDatasetMapper:
    """Maps a dataset dict with selective-search proposals to SoCo's three views and four box
    lists, as the authors' ``ImageFolderImageAsymBboxAwareMultiJitter1[Cutout]``.

    Views: V1 is the whole image resized to ``view_size`` squared; V2 a random-resized crop
    (``crop_scale``) resized to ``view_size``; V3 an independent random-resized crop resized
    to ``small_view_size`` (the authors' code), or with ``small_view="downsample"`` V2 itself
    downsampled (the paper's text). Each view is flipped with ``flip_prob`` and colour
    augmented as BYOL does asymmetrically (blur 1.0 on V1, 0.1 on V2/V3; solarize 0.2 on
    V2/V3 only).

    Boxes, per pair (V1, V2) and (V1, V3) separately: the proposals (ids 1..N; an image
    without proposals has the whole image as its one proposal) that overlap the pair's crop
    are candidates, and ``num_boxes`` of them are drawn (all when fewer). The crops are drawn
    again, up to ``max_tries`` times, until both pairs have at least ``max(num_boxes // 2,
    1)`` candidates, the threshold halving (floor 1) after each failed try; after the last try
    its draw is used as it is. V1's copies of each pair's boxes are jittered independently
    (:func:`d2ext.layers.box_jitter`, ``jitter_prob``, ``jitter_ratio``); V1's, V2's and V3's
    lists are clipped to their views by :func:`d2ext.layers.clip_boxes_to_view`
    (``clip_rule``; its whole-view fallback gets id 1), and each list is padded on its own to
    ``num_boxes`` with unjittered copies of its boxes whose id is also in the pair's other
    list. The pairs are formed by id in the model. Each box gets its level by SoCo's rule on
    its size in its view (truncated integer pixels; -1: none). With ``cutout_prob`` > 0 each
    box of V2 and V3 gets :func:`cutout_in_boxes`, filled with ``cutout_fill`` (the ImageNet
    mean, i.e. SoCo's 0 after normalisation; up to uint8 rounding).

    Returns dicts with ``views`` (3 uint8 CHW tensors in ``image_format``), and ``boxes``
    (float32 [num_boxes, 4], continuous XYXY in view pixels), ``ids`` (int64) and ``levels``
    (int64) as 4 lists each, whose views are :data:`SOCO_BOX_LIST_VIEWS` (V1 for the (V1, V2)
    pair, V2, V1 for the (V1, V3) pair, V3), and the input's ``file_name`` / ``image_id``.
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
        clip_rule: str = "soco",
        level_thresholds: Sequence[float] = SOCO_THRESHOLDS,
        flip_prob: float = 0.5,
        colour_augmentation: bool = True,
        cutout_prob: float = 0.0,
        cutout_ratio: Sequence[float] = (0.1, 0.3),
        cutout_fill: Sequence[float] = IMAGENET_MEAN_RGB,
        image_format: str = "RGB",
    ):
        """
        Args:
            proposals: dataset dict -> [N, 4] inclusive XYXY proposals of the image.
            cutout_fill: RGB fill of the cutout (reordered for a BGR ``image_format``).
            others: as described in the class.
        """
        if small_view not in ("crop", "downsample"):
            raise ValueError(f"small_view must be 'crop' or 'downsample', got {small_view!r}")
        if num_boxes < 1 or max_tries < 1:
            raise ValueError("num_boxes and max_tries must be >= 1")
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image_format must be BGR or RGB, got {image_format!r}")
        if clip_rule not in ("soco", "intersect"):
            raise ValueError(f"clip_rule must be 'soco' or 'intersect', got {clip_rule!r}")
        if not 0.0 <= cutout_prob <= 1.0 or not 0.0 <= cutout_ratio[0] <= cutout_ratio[1]:
            raise ValueError(f"bad cutout_prob {cutout_prob} or cutout_ratio {cutout_ratio}")
        self.proposals = proposals
        self.sizes = (view_size, view_size, small_view_size)
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.small_view = small_view
        self.num_boxes, self.max_tries = num_boxes, max_tries
        self.jitter_prob, self.jitter_ratio = jitter_prob, jitter_ratio
        self.clip_rule = clip_rule
        self.level_thresholds = tuple(level_thresholds)
        self.flip_prob = flip_prob
        self.cutout_prob, self.cutout_ratio = cutout_prob, tuple(cutout_ratio)
        fill = tuple(cutout_fill)
        self.cutout_fill = fill[::-1] if image_format == "BGR" else fill
        self.image_format = image_format
        self.colour = None
        if colour_augmentation:
            self.colour = [
                byol_colour_augmentation(1.0, 0.0),
                byol_colour_augmentation(0.1, 0.2),
                byol_colour_augmentation(0.1, 0.2),
            ]

    def _proposals(self, dataset_dict: dict, height: int, width: int) -> np.ndarray:
        """The image's proposals clipped to it; the whole image when there are none."""
        boxes = np.asarray(self.proposals(dataset_dict), dtype=np.float64).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{dataset_dict.get('file_name')}: proposals contain NaN or Inf")
        clipped, _ = clip_boxes_to_view(torch.from_numpy(boxes), height, width, rule=self.clip_rule)
        return clipped.numpy()

    def select(self, proposals: np.ndarray, height: int, width: int):
        """(V2 crop, V3 crop, (boxes, ids) of the (V1, V2) pair, (boxes, ids) of the (V1, V3)
        pair): each pair's draw of inclusive image boxes, with the retries of the class."""
        if len(proposals) == 0:
            proposals = np.array([[0, 0, width - 1, height - 1]], np.float64)
        ids = np.arange(1, len(proposals) + 1, dtype=np.int64)
        least_common = max(self.num_boxes // 2, 1)
        for _ in range(self.max_tries):
            crop2 = _crop_params(height, width, self.crop_scale, self.crop_ratio)
            crop3 = (
                crop2
                if self.small_view == "downsample"
                else _crop_params(height, width, self.crop_scale, self.crop_ratio)
            )
            pairs = [_draw(proposals, ids, c, self.num_boxes) for c in (crop2, crop3)]
            if all(len(b) >= least_common for b, _ in pairs):
                break
            least_common = max(least_common // 2, 1)
        return crop2, crop3, pairs[0], pairs[1]

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
        crop2, crop3, (b12, i12), (b13, i13) = self.select(proposals, height, width)
        whole = (0, 0, height, width)
        crops = (whole, crop2, crop3)

        def jitter(boxes):  # one independent draw per pair
            t = torch.from_numpy(np.asarray(boxes, np.float64).reshape(-1, 4))
            return box_jitter(t, self.jitter_prob, self.jitter_ratio).numpy()

        lists = [
            _clip(jitter(b12), i12, whole, self.clip_rule),
            _clip(b12, i12, crop2, self.clip_rule),
            _clip(jitter(b13), i13, whole, self.clip_rule),
            _clip(b13, i13, crop3, self.clip_rule),
        ]
        k = self.num_boxes
        lists = [
            _pad(*lists[0], lists[1][1], k),
            _pad(*lists[1], lists[0][1], k),
            _pad(*lists[2], lists[3][1], k),
            _pad(*lists[3], lists[2][1], k),
        ]
        flips = [bool(torch.rand(()) < self.flip_prob) for _ in range(3)]
        out = {"file_name": dataset_dict["file_name"], "boxes": [], "ids": [], "levels": []}
        if "image_id" in dataset_dict:
            out["image_id"] = dataset_dict["image_id"]
        soco_boxes = []
        for (local, ids), v in zip(lists, SOCO_BOX_LIST_VIEWS):
            size = self.sizes[v]
            cont, soco = _to_view(local, crops[v], size, flips[v])
            out["boxes"].append(torch.from_numpy(cont))
            out["ids"].append(torch.from_numpy(ids))
            out["levels"].append(_levels(local, crops[v], size, self.level_thresholds))
            soco_boxes.append(soco)
        out["views"] = [self._render(pil, crops[v], self.sizes[v], flips[v], v) for v in range(3)]
        if self.cutout_prob > 0:
            for v, lst in ((1, 1), (2, 3)):  # V2 with its boxes, V3 with its boxes
                out["views"][v] = cutout_in_boxes(
                    out["views"][v],
                    soco_boxes[lst],
                    self.cutout_prob,
                    self.cutout_ratio,
                    self.cutout_fill,
                )
        return out
