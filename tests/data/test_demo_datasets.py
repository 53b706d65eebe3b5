import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from PIL import Image
from pycocotools import mask as mask_util

from d2ext.data.datasets import register_demo_datasets
from d2ext.data.datasets.demo import (
    DEMO_SPLITS,
    SHAPES_CLASSES,
    SIGNS_CLASSES,
    _generate_split,
    _json_path,
    _photos,
    split_is_complete,
)

from ..helpers import demo_data_root


def test_registered_splits_load_with_detectron2():
    demo_data_root()
    for split in DEMO_SPLITS:
        dicts = DatasetCatalog.get(split.name)
        assert len(dicts) == split.num_images
        meta = MetadataCatalog.get(split.name)
        assert meta.thing_classes == list(split.category_names)
        if split.labeled:
            assert meta.evaluator_type == "coco" and os.path.isfile(meta.json_file)
            assert sum(len(d["annotations"]) for d in dicts) >= split.num_images
        else:
            assert all("annotations" not in d for d in dicts)
    # vocabularies differ but overlap
    assert set(SHAPES_CLASSES) & set(SIGNS_CLASSES) == {"triangle"}


def test_boxes_match_drawn_pixels():
    root = demo_data_root()
    d = DatasetCatalog.get("d2ext_demo_shapes_val")[0]
    img = read_image(d["file_name"], "RGB")
    assert img.shape[:2] == (d["height"], d["width"])
    for ann in d["annotations"]:
        m = mask_util.decode(ann["segmentation"])
        ys, xs = np.nonzero(m)
        x0, y0, w, h = ann["bbox"]
        assert (xs.min(), ys.min()) == (x0, y0) and (xs.max() + 1, ys.max() + 1) == (x0 + w, y0 + h)
        assert 15 <= max(w, h) <= 130
    assert root


def test_generator_is_deterministic(tmp_path):
    split = DEMO_SPLITS[1].__class__("tiny", "tiny", SIGNS_CLASSES, 4, seed=11)
    photos = _photos()
    for sub in ("a", "b"):
        _generate_split(str(tmp_path / sub), split, photos)
    ja = json.loads(open(_json_path(str(tmp_path / "a"), split)).read())
    jb = json.loads(open(_json_path(str(tmp_path / "b"), split)).read())
    assert ja == jb and len(ja["annotations"]) >= 4
    for im in ja["images"]:
        a = np.asarray(Image.open(tmp_path / "a" / "images" / "tiny" / im["file_name"]))
        b = np.asarray(Image.open(tmp_path / "b" / "images" / "tiny" / im["file_name"]))
        assert np.array_equal(a, b)
    assert split_is_complete(str(tmp_path / "a"), split)
    other = split.__class__("tiny2", "tiny", SIGNS_CLASSES, 4, seed=12)
    _generate_split(str(tmp_path / "c"), other, photos)
    jc = json.loads(open(_json_path(str(tmp_path / "c"), other)).read())
    assert jc["annotations"] != ja["annotations"]


def test_missing_dataset_gives_clear_error(tmp_path):
    for split in DEMO_SPLITS:
        DatasetCatalog.remove(split.name)
        MetadataCatalog.remove(split.name)
    try:
        register_demo_datasets(str(tmp_path / "nowhere"))
        with pytest.raises(FileNotFoundError, match="prepare_demo.py"):
            DatasetCatalog.get("d2ext_demo_shapes_train")
    finally:
        for split in DEMO_SPLITS:
            DatasetCatalog.remove(split.name)
            MetadataCatalog.remove(split.name)
        register_demo_datasets(demo_data_root())
