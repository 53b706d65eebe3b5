import json

import numpy as np
import pytest
from detectron2.data.datasets import load_coco_json
from PIL import Image

from d2ext.proposals import (
    DatasetProposals,
    ProposalCache,
    ProposalWriter,
    cache_to_coco,
    cache_to_soco,
    coco_to_cache,
    soco_to_cache,
)


def _cache(root, keys, rng):
    writer = ProposalWriter(str(root), chunk_size=2)
    expected = {}
    for i, key in enumerate(keys):
        n = i % 3
        xy = rng.integers(0, 100, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.integers(1, 50, (n, 2))], axis=1).astype(np.float32)
        writer.add(key, (120 + i, 160), boxes)
        expected[key] = boxes
    writer.flush()
    return ProposalCache(str(root)), expected


def test_coco_round_trip_and_detectron2_reads_it(tmp_path):
    rng = np.random.default_rng(0)
    cache, expected = _cache(tmp_path / "c", ["7", "3", "12"], rng)
    coco = cache_to_coco(cache, str(tmp_path / "p.json"))
    assert coco["categories"] == [{"id": 1, "name": "proposal"}]
    dicts = load_coco_json(str(tmp_path / "p.json"), str(tmp_path), "d2ext_test_proposals")
    by_id = {d["image_id"]: d for d in dicts}
    assert set(by_id) == {3, 7, 12}
    for key, boxes in expected.items():
        got = np.array([a["bbox"] for a in by_id[int(key)].get("annotations", [])]).reshape(-1, 4)
        np.testing.assert_allclose(got[:, :2] + got[:, 2:], boxes[:, 2:])  # XYWH -> XYXY
    n = coco_to_cache(str(tmp_path / "p.json"), str(tmp_path / "back"))
    back = ProposalCache(str(tmp_path / "back"))
    assert n == 3 and set(back.keys()) == set(expected)
    for key, boxes in expected.items():
        np.testing.assert_array_equal(back[key], boxes)
        assert back.size(key) == cache.size(key)


def test_soco_round_trip_reads_sizes_from_images(tmp_path):
    rng = np.random.default_rng(1)
    cache, expected = _cache(tmp_path / "c", ["a.jpg", "b.jpg"], rng)
    data = cache_to_soco(cache, str(tmp_path / "soco.json"))
    x, y, w, h = data["b.jpg"][0]
    assert [x, y, x + w, y + h] == expected["b.jpg"][0].tolist()
    (tmp_path / "img").mkdir()
    Image.new("RGB", (160, 120)).save(tmp_path / "img" / "a.jpg")
    Image.new("RGB", (160, 121)).save(tmp_path / "img" / "b.jpg")
    soco_to_cache(str(tmp_path / "soco.json"), str(tmp_path / "back"), str(tmp_path / "img"))
    back = ProposalCache(str(tmp_path / "back"))
    for key, boxes in expected.items():
        np.testing.assert_array_equal(back[key], boxes)
    assert back.size("b.jpg") == (121, 160)
    json.dump({"missing.jpg": [[0, 0, 5, 5]]}, open(tmp_path / "m.json", "w"))
    soco_to_cache(str(tmp_path / "m.json"), str(tmp_path / "m"), str(tmp_path / "img"))
    assert "missing.jpg" in ProposalCache(str(tmp_path / "m")).failed


def test_dataset_api(tmp_path):
    rng = np.random.default_rng(2)
    cache, expected = _cache(tmp_path / "c", ["5", "6"], rng)
    props = DatasetProposals(str(tmp_path / "c"))
    np.testing.assert_array_equal(
        props({"image_id": 6, "height": 121, "width": 160}), expected["6"]
    )
    with pytest.raises(ValueError, match="made at 121x160"):
        props({"image_id": 6, "height": 10, "width": 160})
    with pytest.raises(KeyError, match="no proposals"):
        props({"image_id": 99})
    by_name = DatasetProposals(str(tmp_path / "c"), key="file_name", image_root="/data")
    np.testing.assert_array_equal(by_name({"file_name": "/data/5"}), expected["5"])


def test_dataset_proposals_give_the_convention_asked_for(tmp_path):
    """A cache records its box convention (default inclusive pixels); DatasetProposals gives
    each reader the one it asks for, converting from the recorded one."""
    from d2ext.proposals import CacheSettingsError, read_box_convention

    boxes = np.array([[2.0, 3.0, 10.5, 20.0], [0.0, 0.0, 1.0, 1.0]], np.float32)
    one = np.float32([0, 0, 1, 1])
    d = {"image_id": 1, "height": 30, "width": 40}
    caches = {}
    for name, settings in (
        ("selective_search", {"backend": "d2ext"}),
        ("no_record", None),
        ("continuous", {"backend": "ground_truth", "box_convention": "continuous"}),
        ("legacy_gt", {"backend": "ground_truth"}),  # before the convention was recorded
    ):
        caches[name] = str(tmp_path / name)
        with ProposalWriter(caches[name], settings=settings) as writer:
            writer.add("1", (30, 40), boxes)
    for name, stored in (
        ("selective_search", "inclusive"),
        ("no_record", "inclusive"),
        ("continuous", "continuous"),
        ("legacy_gt", "continuous"),
    ):
        assert read_box_convention(caches[name]) == stored
        assert ProposalCache(caches[name]).box_convention == stored
        np.testing.assert_array_equal(DatasetProposals(caches[name], convention=None)(d), boxes)
        inclusive = DatasetProposals(caches[name])(d)  # the default: the mappers' convention
        continuous = DatasetProposals(caches[name], convention="continuous")(d)
        if stored == "inclusive":
            np.testing.assert_array_equal(inclusive, boxes)
            np.testing.assert_array_equal(continuous, boxes + one)
        else:
            np.testing.assert_array_equal(inclusive, boxes - one)
            np.testing.assert_array_equal(continuous, boxes)
    # a caller may override a cache's record (a converter's cache of continuous boxes)
    forced = DatasetProposals(caches["no_record"], cache_convention="continuous")
    np.testing.assert_array_equal(forced(d), boxes - one)
    # the selective-search cache's settings check is unchanged
    with pytest.raises(CacheSettingsError):
        ProposalWriter(caches["selective_search"], settings={"backend": "ground_truth"})
    with pytest.raises(CacheSettingsError, match="box_convention"):
        ProposalWriter(str(tmp_path / "bad"), settings={"box_convention": "half-open"})
    with pytest.raises(ValueError, match="convention"):
        DatasetProposals(caches["continuous"], convention="pixels")
