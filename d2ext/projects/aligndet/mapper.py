"""AlignDet's two-view mapper: proposals become pseudo ground truth with instance ids.

Box conventions: proposals come as inclusive-pixel XYXY boxes of the original image (as
selective search reports them); each view carries continuous XYXY boxes (x2 = last pixel + 1)
in its own pixels, detectron2's form.
"""

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.layers import nms
from detectron2.structures import Boxes, Instances

from .rand_aug import aligndet_colour_augmentation

__all__ = ["ALIGNDET_SCALES", "AlignDetDatasetMapper", "aligndet_view_augmentations"]

# the authors' short sides (mmdet Resize, multiscale_mode="value": one of them per view)
ALIGNDET_SCALES = (640, 672, 704, 736, 768, 800)

logger = logging.getLogger(__name__)


def aligndet_view_augmentations(
    short_edge: Sequence[int] = ALIGNDET_SCALES,
    max_size: int = 1333,
    sample_style: str = "choice",
    image_format: str = "BGR",
) -> list[T.Augmentation]:
    """One view's augmentation, the authors' by default: resize with the short side one of
    ``short_edge`` ("choice") or drawn in its [min, max] ("range"), long side at most
    ``max_size``; horizontal flip 0.5; one of the nine RandAug colour operations
    (:func:`aligndet_colour_augmentation`)."""
    return [
        T.ResizeShortestEdge(tuple(short_edge), max_size, sample_style=sample_style),
        T.RandomFlip(0.5, horizontal=True),
        aligndet_colour_augmentation(image_format=image_format),
    ]


class AlignDetDatasetMapper:
    """Two independently augmented views of an image, with its proposals as pseudo boxes.

    The proposals are clipped to the image (degenerate ones dropped), then, with ``nms_iou``,
    de-duplicated by a score-free NMS that keeps them in file order (a box is dropped when its
    IoU with an earlier kept box exceeds ``nms_iou``), then cut to ``max_proposals``. Each
    remaining proposal gets the instance id of its row (0..N-1, made unique across a batch by
    the model). Boxes follow each view's resize and flip; a box that leaves a view (nothing left
    after clipping, or less than ``min_size`` pixels) is dropped from that view only, so its id
    may be present in one view and absent in the other.

    Output: ``{"file_name", "image_id", "num_ids": N, "views": [view1, view2]}``, each view a
    dict as detectron2's DatasetMapper makes (``image`` CHW uint8, ``instances`` with
    ``gt_boxes``, ``gt_classes`` all 0 and ``gt_ids``, ``height``, ``width`` of the view).
    An image without proposals is skipped (the mapper returns None, so detectron2's loader
    draws another image) with a warning.

    Args:
        proposals: callable dataset dict -> [N, 4] inclusive XYXY boxes
            (:class:`d2ext.proposals.DatasetProposals` over an AlignDet-filtered cache).
        augmentations: one view's augmentations, drawn anew for each view.
        max_proposals: keep only the first N proposals (AlignDet's top-50 for RetinaNet and
            DETR); None keeps all.
        nms_iou: IoU threshold of the NMS over the proposals; None: no NMS. Default 0.5: our
            reading of the "@0.5" in the authors' proposal file name
            (``train2017_ratio3size0008@0.5.json``); the released code does not define it.
        min_size: boxes narrower or lower than this in a view are dropped from it.
        image_format: the detector's input format.
    """

    def __init__(
        self,
        *,
        proposals: Callable[[dict], np.ndarray],
        augmentations: Sequence[T.Augmentation] | None = None,
        max_proposals: int | None = None,
        nms_iou: float | None = 0.5,
        min_size: float = 1.0,
        image_format: str = "BGR",
    ):
        if max_proposals is not None and max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1 or None, got {max_proposals}")
        if nms_iou is not None and not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1] or None, got {nms_iou}")
        self.proposals = proposals
        if augmentations is None:
            augmentations = aligndet_view_augmentations(image_format=image_format)
        self.augmentations = T.AugmentationList(list(augmentations))
        self.max_proposals = max_proposals
        self.nms_iou = nms_iou
        self.min_size = float(min_size)
        self.image_format = image_format

    def pseudo_boxes(self, dataset_dict: dict, height: int, width: int) -> np.ndarray:
        """The image's proposals as continuous XYXY boxes clipped to the image, degenerate
        ones dropped, de-duplicated by NMS at ``nms_iou`` (file order), the first
        ``max_proposals`` kept."""
        boxes = np.asarray(self.proposals(dataset_dict), dtype=np.float32).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{dataset_dict.get('file_name')}: proposals contain NaN or Inf")
        boxes = boxes + np.array([0, 0, 1, 1], np.float32)  # inclusive -> continuous
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[keep]
        if self.nms_iou is not None and len(boxes) > 1:
            t = torch.from_numpy(boxes)
            order = -torch.arange(len(t), dtype=torch.float32)  # earlier rows win
            kept = nms(t, order, self.nms_iou).sort().values.numpy()
            boxes = boxes[kept]
        return boxes[: self.max_proposals] if self.max_proposals else boxes

    def _view(self, image: np.ndarray, boxes: np.ndarray, ids: np.ndarray) -> dict:
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        view = aug_input.image
        h, w = view.shape[:2]
        out = transforms.apply_box(boxes).astype(np.float32).reshape(-1, 4)
        out[:, 0::2] = out[:, 0::2].clip(0, w)
        out[:, 1::2] = out[:, 1::2].clip(0, h)
        keep = ((out[:, 2] - out[:, 0]) >= self.min_size) & (
            (out[:, 3] - out[:, 1]) >= self.min_size
        )
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.from_numpy(out[keep]))
        instances.gt_classes = torch.zeros(int(keep.sum()), dtype=torch.int64)
        instances.gt_ids = torch.from_numpy(ids[keep])
        image_t = torch.as_tensor(np.ascontiguousarray(view.transpose(2, 0, 1)))
        return {"image": image_t, "instances": instances, "height": h, "width": w}

    def __call__(self, dataset_dict: dict) -> dict | None:
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        height, width = image.shape[:2]
        boxes = self.pseudo_boxes(dataset_dict, height, width)
        if len(boxes) == 0:
            logger.warning("%s has no usable proposal; skipped", dataset_dict["file_name"])
            return None
        ids = np.arange(len(boxes), dtype=np.int64)
        out = {
            "file_name": dataset_dict["file_name"],
            "num_ids": len(boxes),
            "views": [self._view(image, boxes, ids) for _ in range(2)],
        }
        if "image_id" in dataset_dict:
            out["image_id"] = dataset_dict["image_id"]
        return out
