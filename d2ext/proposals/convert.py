"""Proposal formats in and out of the d2ext cache, and the per-image API mappers use.

- COCO json with one category ("proposal"), which ``detectron2.data.datasets.load_coco_json``
  reads: what AlignDet consumes, and the layout of AlignDet's released proposal files.
- SoCo's json ``{image_name: [[x, y, w, h], ...]}``.
"""

import json
import os

import numpy as np
from PIL import Image

from d2ext.utils.io import atomic_write_bytes

from .cache import BOX_CONVENTIONS, ProposalCache, ProposalWriter, convert_box_convention

__all__ = [
    "DatasetProposals",
    "cache_to_coco",
    "cache_to_soco",
    "coco_to_cache",
    "soco_to_cache",
]


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def cache_to_coco(cache: ProposalCache, out_path: str, file_names: dict | None = None) -> dict:
    """Writes the cache as a one-category COCO json. Keys that are integers become image ids;
    other keys get ids 1..N in sorted order and serve as file names (``file_names`` may map a
    key to its file name instead)."""
    keys = sorted(cache.keys(), key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    images, annotations = [], []
    for n, key in enumerate(keys, start=1):
        image_id = int(key) if key.isdigit() else n
        height, width = cache.size(key)
        name = (file_names or {}).get(key, key)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for box in _xyxy_to_xywh(cache[key]).tolist():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": "selective-search proposals (d2ext)"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "proposal"}],
    }
    atomic_write_bytes(out_path, json.dumps(coco).encode())
    return coco


def coco_to_cache(json_path: str, out_dir: str, chunk_size: int = 1024) -> int:
    """Reads a COCO-style proposal json (AlignDet's release, or :func:`cache_to_coco`'s
    output) into a cache keyed by image id. Returns the number of images."""
    with open(json_path) as f:
        coco = json.load(f)
    per_image: dict[int, list] = {im["id"]: [] for im in coco["images"]}
    for ann in coco.get("annotations", []):
        if ann["image_id"] not in per_image:
            raise ValueError(f"{json_path}: annotation {ann.get('id')} names unknown image")
        per_image[ann["image_id"]].append(ann["bbox"])
    with ProposalWriter(out_dir, chunk_size=chunk_size) as writer:
        for im in coco["images"]:
            boxes = _xywh_to_xyxy(per_image[im["id"]])
            writer.add(str(im["id"]), (im["height"], im["width"]), boxes)
    return len(coco["images"])


def cache_to_soco(cache: ProposalCache, out_path: str) -> dict:
    """Writes SoCo's ``{image_name: [[x, y, w, h], ...]}`` json (keys as image names)."""
    data = {key: _xyxy_to_xywh(cache[key]).tolist() for key in sorted(cache.keys())}
    atomic_write_bytes(out_path, json.dumps(data).encode())
    return data


def soco_to_cache(json_path: str, out_dir: str, image_root: str, chunk_size: int = 1024) -> int:
    """Reads SoCo's json into a cache; image sizes, which SoCo's file lacks, come from the
    image headers under ``image_root``. Returns the number of images."""
    with open(json_path) as f:
        data = json.load(f)
    with ProposalWriter(out_dir, chunk_size=chunk_size) as writer:
        for name, boxes in data.items():
            path = os.path.join(image_root, name)
            try:
                with Image.open(path) as im:
                    size = (im.height, im.width)
            except OSError as e:
                writer.add_failed(name, f"cannot read the size of {path}: {e}")
                continue
            writer.add(name, size, _xywh_to_xyxy(boxes))
    return len(data)


class DatasetProposals:
    """The proposals of a dataset dict, for the pretraining mappers.

    Args:
        cache_dir: a proposal cache (already filtered when it was written).
        key: "image_id" (caches made with ``--dataset``) or "file_name" (the path relative to
            ``image_root``, caches made with ``--images``).
        image_root: for ``key="file_name"``: the folder given to ``--images``, or for a glob
            the deepest folder holding every match (None: keys are file names).
        convention: the box convention of the boxes returned: "inclusive" (x2 = the last
            pixel: what the SoCo and AlignDet mappers read), "continuous" (x2 = x1 + width),
            or None (as the cache stores them).
        cache_convention: the convention the cache's boxes are in; None: the one its
            ``settings.json`` records (:func:`d2ext.proposals.cache.box_convention`:
            inclusive for selective search, continuous for a ground-truth cache).
    """

    def __init__(
        self,
        cache_dir: str,
        key: str = "image_id",
        image_root: str | None = None,
        convention: str | None = "inclusive",
        cache_convention: str | None = None,
    ):
        if key not in ("image_id", "file_name"):
            raise ValueError(f"key must be 'image_id' or 'file_name', got {key!r}")
        for name, value in (("convention", convention), ("cache_convention", cache_convention)):
            if value is not None and value not in BOX_CONVENTIONS:
                raise ValueError(f"{name} must be one of {BOX_CONVENTIONS} or None, got {value!r}")
        self.cache = ProposalCache(cache_dir)
        self.key = key
        self.image_root = image_root
        self.cache_convention = cache_convention or self.cache.box_convention
        self.convention = convention or self.cache_convention

    def key_of(self, dataset_dict: dict) -> str:
        """
        Args:
            dataset_dict: a detectron2 dataset dict.

        Returns:
            str: its cache key: ``image_id``, or ``file_name`` relative to ``image_root`` (its base
            name when ``image_root`` is None).
        """
        if self.key == "image_id":
            return str(dataset_dict["image_id"])
        name = dataset_dict["file_name"]
        return os.path.relpath(name, self.image_root) if self.image_root else os.path.basename(name)

    def __call__(self, dataset_dict: dict) -> np.ndarray:
        """float32 [N, 4] XYXY boxes in the image's absolute pixels (N may be 0), in
        ``convention``.

        Raises:
            KeyError: the image has no entry (never processed, or failed, with the reason).
            ValueError: the image's size differs from the one the proposals were made on.
        """
        key = self.key_of(dataset_dict)
        boxes = self.cache[key]
        size = self.cache.size(key)
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None not in expected and tuple(expected) != size:
            raise ValueError(
                f"image {key}: proposals were made at {size[0]}x{size[1]}, the dataset says "
                f"{expected[0]}x{expected[1]}"
            )
        return convert_box_convention(boxes, self.cache_convention, self.convention)
