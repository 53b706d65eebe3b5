"""The unified label space of ScaleDet: the union of several datasets' label names.

ScaleDet (Sec. 3.1) does no manual merging: every dataset's labels enter the unified space and
semantic overlaps are handled by the text embeddings and the soft-label loss. Identical
strings may be merged into one unified label (``merge_identical=True``); otherwise each
dataset keeps its own entry, and two entries with the same name share the same embedding.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["UnifiedLabelSpace", "build_unified_label_space"]


@dataclass(frozen=True)
class UnifiedLabelSpace:
    """Args:
    names: the unified labels, in the order of the classifier's rows.
    datasets: the source datasets, in the order given to the builder.
    mappings: per dataset, the unified index of each of its contiguous class ids.
    """

    names: tuple[str, ...]
    datasets: tuple[str, ...]
    mappings: Mapping[str, tuple[int, ...]]

    def __len__(self) -> int:
        return len(self.names)

    def mapping(self, dataset: str) -> tuple[int, ...]:
        if dataset not in self.mappings:
            raise KeyError(
                f"dataset {dataset!r} is not in this label space (datasets: {list(self.datasets)})"
            )
        return self.mappings[dataset]

    def to_unified(self, dataset: str, class_id: int) -> int:
        """The unified index of ``dataset``'s contiguous class id ``class_id``."""
        mapping = self.mapping(dataset)
        if not 0 <= class_id < len(mapping):
            raise IndexError(f"class id {class_id} out of range for {dataset!r} ({len(mapping)})")
        return mapping[class_id]

    def dataset_names(self, dataset: str) -> list[str]:
        """``dataset``'s own labels, in its contiguous order."""
        return [self.names[i] for i in self.mapping(dataset)]

    def to_json(self) -> str:
        return json.dumps(
            {
                "names": list(self.names),
                "datasets": list(self.datasets),
                "mappings": {k: list(v) for k, v in self.mappings.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "UnifiedLabelSpace":
        d = json.loads(text)
        return cls(
            tuple(d["names"]), tuple(d["datasets"]), {k: tuple(v) for k, v in d["mappings"].items()}
        )


def _thing_classes(dataset: str) -> list[str]:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    classes = MetadataCatalog.get(dataset).get("thing_classes", None)
    if classes is None and dataset in DatasetCatalog.list():
        DatasetCatalog.get(dataset)  # load_coco_json sets thing_classes on first load
        classes = MetadataCatalog.get(dataset).get("thing_classes", None)
    if classes is None:
        raise KeyError(
            f"dataset {dataset!r} has no thing_classes in MetadataCatalog; register it first "
            "(tools/train_net.py calls d2ext.data.register_all_datasets)"
        )
    return list(classes)


def build_unified_label_space(
    datasets: Sequence[str] | Mapping[str, Sequence[str]], merge_identical: bool = False
) -> UnifiedLabelSpace:
    """Forms the unified label space of several datasets.

    Args:
        datasets: registered dataset names (their ``thing_classes`` are read from
            detectron2's MetadataCatalog), or a mapping dataset name -> its label names.
        merge_identical: merge labels whose strings are identical (after stripping
            surrounding white space) into one unified label.

    Returns:
        The unified labels in first-seen order, and each dataset's mapping into them.
    """
    if isinstance(datasets, str):
        datasets = [datasets]
    if isinstance(datasets, Mapping):
        per_dataset = {k: list(v) for k, v in datasets.items()}
    else:
        per_dataset = {d: _thing_classes(d) for d in datasets}
    if not per_dataset:
        raise ValueError("build_unified_label_space needs at least one dataset")
    names: list[str] = []
    index: dict[str, int] = {}
    mappings = {}
    for dataset, labels in per_dataset.items():
        if not labels:
            raise ValueError(f"dataset {dataset!r} has no labels")
        mapping = []
        for label in labels:
            key = str(label).strip()
            if not key:
                raise ValueError(f"dataset {dataset!r} has an empty label name")
            if merge_identical and key in index:
                mapping.append(index[key])
                continue
            index.setdefault(key, len(names))
            mapping.append(len(names))
            names.append(key)
        mappings[dataset] = tuple(mapping)
    return UnifiedLabelSpace(tuple(names), tuple(per_dataset), mappings)
