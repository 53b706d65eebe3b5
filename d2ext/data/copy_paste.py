"""Large-scale jittering with simple copy-paste (Ghiasi et al., 2021), as Co-DINO's LSJ recipes
run it (mmdetection 2's ``MultiImageMixDataset`` with ``CopyPaste(max_num_pasted=100)`` after an
LSJ loading pipeline, ``co_dino_5scale_lsj_r50_1x_coco.py``).

- :func:`copy_paste`: pastes a random subset of a source image's objects onto a destination
  image of the same size, removes the covered parts of the destination's masks, recomputes the
  destination boxes from what is left and drops the objects it hides.
- :class:`LSJCopyPasteDatasetMapper`: a detectron2 ``DatasetMapper`` that runs the LSJ
  augmentations (:func:`d2ext.data.transforms.lsj_augmentations`) on an image, boxes recomputed
  from the masks after the crop and boxes of side <= ``min_box_size`` dropped (the authors'
  ``recompute_bbox=True`` and ``FilterAnnotations``), then draws a source image from
  ``source_dataset``, maps it the same way and pastes it with :func:`copy_paste`.
- :func:`build_lsj_copy_paste_train_loader`: detectron2's ``build_detection_train_loader`` that
  also hands the training dataset to the mapper as its source (one copy of the dataset serves
  both).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetFromList, DatasetMapper, build_detection_train_loader
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, Boxes, Instances

__all__ = [
    "LSJCopyPasteDatasetMapper",
    "build_lsj_copy_paste_train_loader",
    "copy_paste",
    "mask_boxes",
]

logger = logging.getLogger(__name__)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of binary masks, the same as detectron2's ``BitMasks.get_bounding_boxes``
    (and mmdetection's ``BitmapMasks.get_bboxes``): (x_min, y_min, x_max + 1, y_max + 1), zeros
    for an empty mask; reduces over a uint8 view, much faster on the CPU than ``torch.any``.

    Args:
        masks: [N, H, W] bool masks.

    Returns:
        Tensor: [N, 4] float32 boxes.
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.float32, device=masks.device)
    u8 = masks.view(torch.uint8) if masks.dtype == torch.bool else (masks != 0).view(torch.uint8)
    cols, rows = u8.amax(dim=1), u8.amax(dim=2)  # [N, W], [N, H]
    x1, y1 = cols.argmax(dim=1), rows.argmax(dim=1)  # the first 1
    x2, y2 = w - cols.flip(1).argmax(dim=1), h - rows.flip(1).argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return boxes * (cols.amax(dim=1) > 0)[:, None]


def _mask_areas(masks: torch.Tensor) -> torch.Tensor:
    """[N] pixel counts of [N, H, W] bool masks (numpy's count_nonzero on the CPU)."""
    if masks.device.type == "cpu" and masks.shape[0] > 0:
        counts = np.count_nonzero(masks.numpy().reshape(masks.shape[0], -1), axis=1)
        return torch.from_numpy(counts)
    return masks.flatten(1).sum(dim=1)


def _select(instances: Instances, max_num_pasted: int, rng) -> Instances:
    """mmdetection's ``CopyPaste._select_object``: n' ~ randint(0, min(n + 1, max)) objects
    drawn without replacement."""
    n = len(instances)
    num = rng.randint(0, min(n + 1, max_num_pasted))
    picked = rng.choice(n, size=num, replace=False)
    return instances[torch.as_tensor(picked, dtype=torch.long)]


def copy_paste(
    dst_image: torch.Tensor,
    dst_instances: Instances,
    src_image: torch.Tensor,
    src_instances: Instances,
    *,
    max_num_pasted: int = 100,
    bbox_occluded_thr: float = 10,
    mask_occluded_thr: int = 300,
    selected: bool = True,
    rng=None,
) -> tuple[torch.Tensor, Instances]:
    """Pastes source objects onto a destination image (mmdetection's ``CopyPaste``).

    With ``selected``, n' objects of the source are drawn, n' ~ randint(0, min(n + 1,
    max_num_pasted)) (numpy's ``randint``: high excluded), without replacement; with none
    drawn the destination is returned unchanged. Otherwise: the union of the drawn objects'
    masks is cleared from every destination mask; each destination box becomes the tight box
    of what is left of its mask (zeros when nothing is); a destination object is kept if every
    coordinate of its new box is within ``bbox_occluded_thr`` of its old box, or if more than
    ``mask_occluded_thr`` pixels of its mask are left; the image takes the source pixels under
    the union; the drawn objects are appended after the kept ones.

    Args:
        dst_image: [C, H, W] the destination image.
        dst_instances: its ``gt_boxes``, ``gt_classes`` and ``gt_masks`` (``BitMasks``).
        src_image: [C, H, W] the source image, the same size.
        src_instances: the source's objects, as ``dst_instances``.
        max_num_pasted: the bound on the number of objects drawn (see above).
        bbox_occluded_thr: pixels a box may move and still count as visible.
        mask_occluded_thr: mask pixels above which an object counts as visible.
        selected: draw a subset (False: paste every source object).
        rng: numpy ``RandomState``-like source of ``randint`` / ``choice`` (default the global
            ``np.random``, which detectron2 seeds per data-loader worker).

    Returns:
        tuple[Tensor, Instances]: the new image and its objects (``gt_boxes``, ``gt_classes``,
        ``gt_masks``).
    """
    rng = np.random if rng is None else rng
    if dst_image.shape != src_image.shape:
        raise ValueError(
            f"copy-paste needs two images of one size, got {tuple(dst_image.shape)} and "
            f"{tuple(src_image.shape)} (pad them to one size first, e.g. with PadToSize)"
        )
    for name, inst in (("destination", dst_instances), ("source", src_instances)):
        if not (inst.has("gt_masks") and isinstance(inst.gt_masks, BitMasks)):
            raise ValueError(f"copy-paste needs BitMasks gt_masks on the {name} instances")
    if selected:
        src_instances = _select(src_instances, max_num_pasted, rng)
    if len(src_instances) == 0:
        return dst_image, dst_instances
    src_masks = src_instances.gt_masks.tensor
    composed = src_masks.view(torch.uint8).amax(dim=0).bool()  # [H, W] union (fast any)
    dst_masks = dst_instances.gt_masks.tensor & ~composed
    new_boxes = mask_boxes(dst_masks)
    old_boxes = dst_instances.gt_boxes.tensor
    box_visible = ((new_boxes - old_boxes).abs() <= bbox_occluded_thr).all(dim=1)
    mask_visible = _mask_areas(dst_masks) > mask_occluded_thr
    keep = box_visible | mask_visible
    image = torch.where(composed[None], src_image, dst_image)
    out = Instances(dst_instances.image_size)
    out.gt_boxes = Boxes(torch.cat([new_boxes[keep], src_instances.gt_boxes.tensor]))
    out.gt_classes = torch.cat([dst_instances.gt_classes[keep], src_instances.gt_classes])
    out.gt_masks = BitMasks(torch.cat([dst_masks[keep], src_masks]))
    return image, out


def _segmentation_as_rle(segm, height: int, width: int):
    """COCO polygons (or uncompressed RLE) -> one compressed RLE, so that detectron2 transforms
    the mask as a bitmap (a polygon crop would need shapely)."""
    if isinstance(segm, list):
        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_util.frPyObjects(segm, height, width)
    return segm


def _box_masks(boxes: torch.Tensor, image: torch.Tensor) -> BitMasks:
    """Boxes as masks (mmdetection 3's ``HorizontalBoxes.create_masks``)."""
    h, w = image.shape[-2:]
    masks = torch.zeros((boxes.shape[0], h, w), dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        masks[k, int(y1) : int(y2), int(x1) : int(x2)] = True
    return BitMasks(masks)


class LSJCopyPasteDatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` with Co-DINO's LSJ annotation handling and copy-paste.

    In training, after the augmentations (e.g. :func:`d2ext.data.transforms.lsj_augmentations`):

    - crowd annotations are dropped; boxes left empty by the crop are dropped (mmdetection's
      ``RandomCrop``); with masks, every box becomes the tight box of its mask
      (``recompute_bbox=True``) and masks are ``BitMasks``;
    - objects whose box width or height is not above ``min_box_size`` are dropped
      (``FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2))``); when that drops every object left,
      the mapper returns None and detectron2's ``MapDataset`` maps another image (the authors'
      dataset draws another image the same way);
    - with ``copy_paste``, a source image is drawn uniformly from ``source_dataset``, mapped the
      same way (redrawn up to ``max_refetch`` times while it maps to None) and pasted with
      :func:`copy_paste`. Copy-paste needs masks (``use_instance_mask=True``), as in the
      authors' code; for box-only data, ``paste_by_box`` uses each box's pixels as its mask
      (mmdetection 3's ``CopyPaste(paste_by_box=True)``: rows int(y1):int(y2), columns
      int(x1):int(x2)) and the output has no masks.

    At inference it is detectron2's ``DatasetMapper``.

    Args:
        is_train: training or inference.
        augmentations: detectron2 augmentations (copy-paste needs them to give one image size).
        image_format: the image format for ``read_image``.
        use_instance_mask: read the masks (needed by copy-paste and for the box recompute).
        copy_paste: paste a source image's objects in training.
        source_dataset: the dataset dicts the source images are drawn from (a list or a
            map-style dataset); :func:`build_lsj_copy_paste_train_loader` sets it to the
            training dataset when None.
        max_num_pasted, bbox_occluded_thr, mask_occluded_thr: as in :func:`copy_paste` (the
            authors' 100, 10, 300).
        min_box_size: objects with a box side not above this are dropped.
        paste_by_box: without masks, paste boxes as masks (see above).
        max_refetch: draws of a source image before giving up.
        kwargs: the other arguments of detectron2's ``DatasetMapper``.
    """

    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations,
        image_format: str,
        use_instance_mask: bool = True,
        copy_paste: bool = True,
        source_dataset: Sequence[dict] | None = None,
        max_num_pasted: int = 100,
        bbox_occluded_thr: float = 10,
        mask_occluded_thr: int = 300,
        min_box_size: float = 1e-2,
        paste_by_box: bool = False,
        max_refetch: int = 15,
        **kwargs,
    ):
        if copy_paste and is_train and not use_instance_mask and not paste_by_box:
            raise ValueError(
                "copy-paste needs the instance masks: set use_instance_mask=True (or "
                "paste_by_box=True to paste boxes as masks)"
            )
        if kwargs.pop("instance_mask_format", "bitmask") != "bitmask":
            raise ValueError("LSJCopyPasteDatasetMapper keeps masks as bitmasks")
        kwargs.pop("recompute_boxes", None)
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            use_instance_mask=use_instance_mask,
            instance_mask_format="bitmask",
            recompute_boxes=use_instance_mask,
            **kwargs,
        )
        if max_refetch < 1:
            raise ValueError(f"max_refetch must be >= 1, got {max_refetch}")
        self.copy_paste = copy_paste
        self.source_dataset = source_dataset
        self.max_num_pasted = max_num_pasted
        self.bbox_occluded_thr = bbox_occluded_thr
        self.mask_occluded_thr = mask_occluded_thr
        self.min_box_size = min_box_size
        self.paste_by_box = paste_by_box
        self.max_refetch = max_refetch

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        height, width = dataset_dict["height"], dataset_dict["width"]
        annos = []
        for obj in dataset_dict.pop("annotations"):
            if obj.get("iscrowd", 0) != 0:
                continue
            obj.pop("keypoints", None)
            if not self.use_instance_mask:
                obj.pop("segmentation", None)
            elif "segmentation" in obj:
                obj["segmentation"] = _segmentation_as_rle(obj["segmentation"], height, width)
            else:
                raise ValueError(
                    f"{dataset_dict.get('file_name')}: an annotation has no 'segmentation'; "
                    "the mask-based LSJ / copy-paste needs masks (for box-only data: "
                    "use_instance_mask=False, with paste_by_box=True or copy_paste=False)"
                )
            annos.append(utils.transform_instance_annotations(obj, transforms, image_shape))
        instances = utils.annotations_to_instances(annos, image_shape, mask_format="bitmask")
        if self.use_instance_mask and not instances.has("gt_masks"):  # no annotation at all
            instances.gt_masks = BitMasks(torch.zeros((0, *image_shape), dtype=torch.bool))
        in_crop = instances.gt_boxes.nonempty(threshold=0.0)  # boxes the crop left empty go
        if self.recompute_boxes:
            instances.gt_boxes = Boxes(mask_boxes(instances.gt_masks.tensor))
        large = instances.gt_boxes.nonempty(threshold=self.min_box_size)
        before = int(in_crop.sum())
        instances = instances[in_crop & large]
        dataset_dict["instances"] = instances
        dataset_dict["_lsj_all_filtered"] = before > 0 and len(instances) == 0

    def _map_one(self, dataset_dict: dict) -> dict | None:
        out = super().__call__(dataset_dict)
        if out.pop("_lsj_all_filtered", False):
            return None
        return out

    def __call__(self, dataset_dict: dict) -> dict | None:
        """
        Args:
            dataset_dict: one image in detectron2's dataset format.

        Returns:
            dict | None: detectron2's model input (``image`` [C, H, W] uint8, ``instances`` in
            training); None when every object was filtered out (training only).
        """
        if not self.is_train:
            return super().__call__(dataset_dict)
        out = self._map_one(dataset_dict)
        if out is None or not self.copy_paste:
            return out
        if self.source_dataset is None or len(self.source_dataset) == 0:
            raise ValueError(
                "copy-paste needs a non-empty source_dataset: pass it, or build the loader with "
                "d2ext.data.copy_paste.build_lsj_copy_paste_train_loader"
            )
        for _ in range(self.max_refetch):
            index = np.random.randint(len(self.source_dataset))
            source = self._map_one(copy.deepcopy(self.source_dataset[index]))
            if source is not None:
                break
        else:
            raise RuntimeError(
                f"{self.max_refetch} source images in a row were left without objects by the "
                "augmentations: check the dataset and the augmentations"
            )
        if "instances" not in out or "instances" not in source:
            raise ValueError("copy-paste needs annotations on both images")
        if not self.use_instance_mask:  # paste_by_box
            for x in (out, source):
                x["instances"].gt_masks = _box_masks(x["instances"].gt_boxes.tensor, x["image"])
        out["image"], out["instances"] = copy_paste(
            out["image"],
            out["instances"],
            source["image"],
            source["instances"],
            max_num_pasted=self.max_num_pasted,
            bbox_occluded_thr=self.bbox_occluded_thr,
            mask_occluded_thr=self.mask_occluded_thr,
        )
        if not self.use_instance_mask:
            out["instances"].remove("gt_masks")
        return out


def build_lsj_copy_paste_train_loader(dataset, *, mapper: LSJCopyPasteDatasetMapper, **kwargs):
    """detectron2's ``build_detection_train_loader``; when the mapper pastes and has no
    ``source_dataset``, the training dataset becomes its source (the authors' copy-paste draws
    its source images from the training set itself).

    Args:
        dataset: the training dataset dicts (a list, or a map-style dataset).
        mapper: the mapper.
        kwargs: the other arguments of ``build_detection_train_loader`` (``total_batch_size``,
            ``num_workers``, ``sampler``, ...).

    Returns:
        the data loader.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if getattr(mapper, "copy_paste", False) and mapper.source_dataset is None:
        mapper.source_dataset = dataset
    return build_detection_train_loader(dataset, mapper=mapper, **kwargs)
