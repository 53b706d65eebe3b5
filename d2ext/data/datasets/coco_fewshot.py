"""COCO few-shot splits (the TFA / DeFRCN protocol imTED follows): 60 base classes, 20 novel
classes (those of PASCAL VOC), k-shot training sets sampled per class by seed.

Registered names (all derived from detectron2's ``coco_2017_train`` / ``coco_2017_val``):

- ``coco_2017_train_base``, ``coco_2017_val_base``: base classes only (annotations of novel
  classes removed), 60 classes.
- ``coco_2017_train_{k}shot_seed{s}`` (k in 1, 2, 3, 5, 10, 30; s in 0-9): for every one of the
  80 classes, images containing it are taken in a seeded random order and kept while the
  class's instance count stays <= k, until it reaches k; only that class's annotations of a
  kept image are used (TFA's sampling). Fine-tuning trains on these, evaluation uses
  ``coco_2017_val`` (80 classes).

The few-shot datasets have no ``json_file``: detectron2's COCOEvaluator writes their COCO json
from the dicts, so base-class evaluation scores the 60 base classes only.
"""

import random

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["COCO_NOVEL_CLASSES", "kshot_dicts", "register_coco_fewshot", "subset_dicts"]

COCO_NOVEL_CLASSES = (
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch",
    "train", "tv",
)  # fmt: skip
SHOTS = (1, 2, 3, 5, 10, 30)


def subset_dicts(dicts: list[dict], keep: list[int]) -> list[dict]:
    """Keeps the annotations whose contiguous ``category_id`` is in ``keep`` and renumbers
    them 0..len(keep)-1 in that order; images left without annotations are dropped."""
    new_id = {c: i for i, c in enumerate(keep)}
    out = []
    for d in dicts:
        anns = [dict(a, category_id=new_id[a["category_id"]]) for a in d.get("annotations", [])
                if a["category_id"] in new_id]  # fmt: skip
        if anns:
            out.append(dict(d, annotations=anns))
    return out


def _instances(d: dict, c: int) -> list[dict]:
    return [a for a in d.get("annotations", []) if a["category_id"] == c and not a.get("iscrowd")]


def kshot_dicts(dicts: list[dict], num_classes: int, k: int, seed: int) -> list[dict]:
    """TFA-style k-shot sampling (see the module docstring); non-crowd instances only."""
    rng = random.Random(seed)
    chosen: dict[int, dict] = {}
    for c in range(num_classes):
        images = [i for i, d in enumerate(dicts) if _instances(d, c)]
        rng.shuffle(images)
        count = 0
        for i in images:
            anns = [
                a
                for a in dicts[i]["annotations"]
                if a["category_id"] == c and not a.get("iscrowd", 0)
            ]
            if count + len(anns) > k:
                continue
            rec = chosen.setdefault(i, dict(dicts[i], annotations=[]))
            rec["annotations"] = rec["annotations"] + anns
            count += len(anns)
            if count == k:
                break
    return [chosen[i] for i in sorted(chosen)]


def _base_ids(meta) -> list[int]:
    return [i for i, n in enumerate(meta.thing_classes) if n not in COCO_NOVEL_CLASSES]


def register_coco_fewshot(source_train: str = "coco_2017_train", source_val: str = "coco_2017_val"):
    """Registers the splits above (lazily: nothing is read until a split is used)."""
    full = MetadataCatalog.get(source_train)

    def set_meta(name, ids):
        # thing_classes of the source are known statically for COCO (detectron2's builtin)
        classes = [full.thing_classes[i] for i in ids]
        inv = {v: k for k, v in full.thing_dataset_id_to_contiguous_id.items()}
        MetadataCatalog.get(name).set(
            thing_classes=classes,
            thing_dataset_id_to_contiguous_id={inv[i]: j for j, i in enumerate(ids)},
            evaluator_type="coco",
        )

    if "thing_classes" not in full.as_dict():
        return  # COCO not registered by detectron2 in this environment
    base = _base_ids(full)
    every = list(range(len(full.thing_classes)))
    for split, src in (("train", source_train), ("val", source_val)):
        name = f"coco_2017_{split}_base"
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, lambda s=src: subset_dicts(DatasetCatalog.get(s), base))
            set_meta(name, base)
    for k in SHOTS:
        for seed in range(10):
            name = f"coco_2017_train_{k}shot_seed{seed}"
            if name not in DatasetCatalog.list():
                DatasetCatalog.register(
                    name,
                    lambda k=k, seed=seed: kshot_dicts(
                        DatasetCatalog.get(source_train), len(every), k, seed
                    ),
                )
                set_meta(name, every)
