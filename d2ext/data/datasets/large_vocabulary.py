"""Registration of the two large-vocabulary detection datasets ScaleDet trains on that detectron2
does not register itself, under the names and layout Detic uses (COCO-format json):

- ``objects365_v2_train`` / ``objects365_v2_val``:
  ``$DETECTRON2_DATASETS/objects365/{train,val}/`` images,
  ``objects365/annotations/zhiyuan_objv2_{train,val}.json``.
- ``oid_train`` / ``oid_val_expanded`` (OpenImages V6 challenge-2019 boxes, converted to COCO
  json as Detic's tools/convert_oid.py does): ``oid/images/{train,validation}/``,
  ``oid/annotations/oid_challenge_2019_{train_bbox,val_expanded}.json``.

Their category lists come from the json on first load (detectron2's load_coco_json sets the
metadata), so nothing is read until a config uses them.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = ["LARGE_VOCABULARY_DATASETS", "register_large_vocabulary_datasets"]

LARGE_VOCABULARY_DATASETS = {
    "objects365_v2_train": ("objects365/train", "objects365/annotations/zhiyuan_objv2_train.json"),
    "objects365_v2_val": ("objects365/val", "objects365/annotations/zhiyuan_objv2_val.json"),
    "oid_train": ("oid/images/train", "oid/annotations/oid_challenge_2019_train_bbox.json"),
    "oid_val_expanded": (
        "oid/images/validation",
        "oid/annotations/oid_challenge_2019_val_expanded.json",
    ),
}


def _load(name: str, image_root: str, json_file: str) -> list[dict]:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"dataset {name!r}: {json_file} not found. Lay the dataset out under "
            "$DETECTRON2_DATASETS as d2ext/data/datasets/large_vocabulary.py describes."
        )
    return load_coco_json(json_file, image_root, name)


def register_large_vocabulary_datasets(root: str | None = None) -> None:
    """Registers Objects365 v2 and OpenImages (Detic's layout) under ``root`` (default
    ``$DETECTRON2_DATASETS`` or ``./datasets``). Already registered names are kept."""
    root = root or os.environ.get("DETECTRON2_DATASETS", "datasets")
    for name, (images, ann) in LARGE_VOCABULARY_DATASETS.items():
        if name in DatasetCatalog.list():
            continue
        image_root, json_file = os.path.join(root, images), os.path.join(root, ann)
        DatasetCatalog.register(name, lambda n=name, i=image_root, j=json_file: _load(n, i, j))
        MetadataCatalog.get(name).set(
            image_root=image_root, json_file=json_file, evaluator_type="coco"
        )
