"""COCO few-shot splits: base-class subsets and TFA-style k-shot sampling."""

import random

from d2ext.data.datasets.coco_fewshot import COCO_NOVEL_CLASSES, kshot_dicts, subset_dicts


def _dicts(seed=0, n=40, classes=4):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        anns = [
            {"category_id": rng.randrange(classes), "bbox": [0, 0, 1, 1]}
            for _ in range(rng.randint(1, 4))
        ]
        if i % 7 == 0:
            anns.append({"category_id": 0, "iscrowd": 1, "bbox": [0, 0, 2, 2]})
        out.append({"image_id": i, "annotations": anns})
    return out


def test_kshot_has_exactly_k_instances_per_class():
    dicts = _dicts()
    for k in (1, 3, 5):
        shots = kshot_dicts(dicts, 4, k, seed=1)
        counts = [0] * 4
        for d in shots:
            for a in d["annotations"]:
                assert not a.get("iscrowd")
                counts[a["category_id"]] += 1
        assert counts == [k] * 4
        # deterministic per seed, different across seeds
        assert shots == kshot_dicts(dicts, 4, k, seed=1)
    ids = lambda s: [d["image_id"] for d in s]  # noqa: E731
    assert ids(kshot_dicts(dicts, 4, 5, seed=1)) != ids(kshot_dicts(dicts, 4, 5, seed=2))


def test_base_subset_renumbers_and_drops_novel():
    dicts = _dicts()
    base = subset_dicts(dicts, keep=[1, 3])
    assert all(a["category_id"] in (0, 1) for d in base for a in d["annotations"])
    n1 = sum(a["category_id"] == 1 for d in dicts for a in d["annotations"])
    assert sum(a["category_id"] == 0 for d in base for a in d["annotations"]) == n1
    assert len(COCO_NOVEL_CLASSES) == 20
