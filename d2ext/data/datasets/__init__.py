"""Dataset registration. Nothing registers on import: call :func:`register_all_datasets`
(``tools/train_net.py`` does) or the per-dataset functions."""

import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .coco_fewshot import register_coco_fewshot
from .demo import (
    DEMO_SPLITS,
    Split,
    _json_path,
    demo_root,
    generate_demo_data,
    register_demo_subsets,
    split_is_complete,
)
from .image_folder import IMAGE_EXTENSIONS, image_folder_dicts, list_image_folder
from .large_vocabulary import register_large_vocabulary_datasets

__all__ = [
    "IMAGE_EXTENSIONS",
    "generate_demo_data",
    "image_folder_dicts",
    "list_image_folder",
    "register_all_datasets",
    "register_coco_fewshot",
    "register_demo_datasets",
    "register_large_vocabulary_datasets",
]


def _missing(root: str, split: Split) -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset {split.name!r} is not at {root} (expected {_json_path(root, split)}). "
        "Generate the demo data with `python datasets/prepare_demo.py` (or `make data`), or "
        "point DETECTRON2_DATASETS at the folder that holds d2ext_demo/."
    )


def _load_split(root: str, split: Split) -> list[dict]:
    if not split_is_complete(root, split):
        raise _missing(root, split)
    image_root = os.path.join(root, "images", split.dirname)
    if split.labeled:
        return load_coco_json(_json_path(root, split), image_root, split.name)
    with open(_json_path(root, split)) as f:
        images = json.load(f)["images"]
    return [
        {
            "file_name": os.path.join(image_root, im["file_name"]),
            "image_id": im["id"],
            "height": im["height"],
            "width": im["width"],
        }
        for im in images
    ]


def register_demo_datasets(root: str | None = None) -> None:
    """Registers every demo split (see :mod:`d2ext.data.datasets.demo`) rooted at ``root``
    (default ``$DETECTRON2_DATASETS/d2ext_demo``), then the subsets drawn from them.
    Re-registering is a no-op."""
    root = demo_root(root)
    for split in DEMO_SPLITS:
        if split.name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(split.name, lambda r=root, s=split: _load_split(r, s))
        meta = {
            "thing_classes": list(split.category_names),
            "image_root": os.path.join(root, "images", split.dirname),
        }
        if split.labeled:
            meta.update(json_file=_json_path(root, split), evaluator_type="coco")
        MetadataCatalog.get(split.name).set(**meta)
    register_demo_subsets()


def register_all_datasets() -> None:
    """Registers the datasets d2ext adds. detectron2's builtin datasets (COCO, LVIS, ...)
    stay registered as detectron2 registers them, under ``$DETECTRON2_DATASETS``."""
    register_demo_datasets()
    register_large_vocabulary_datasets()
    register_coco_fewshot()
