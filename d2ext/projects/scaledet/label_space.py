"""The unified label space of ScaleDet: the union of several datasets' label names.

ScaleDet (Sec. 3.1) does no manual merging: every dataset's labels enter the unified space and
semantic overlaps are handled by the text embeddings and the soft-label loss. Identical names
may be merged into one unified label (``merge_identical=True``). Names are compared case- and
white-space-insensitively (``label_key``: surrounding white space stripped, inner runs of
white space and underscores read as one space, casefolded), since the text encoders read
"Person", "person" and " person " alike: without merging they would be labels with the same
embedding and opposite targets. The merged label keeps its first-seen spelling;
:meth:`UnifiedLabelSpace.report` lists every merge.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FedLossClassWeights",
    "UnifiedLabelSpace",
    "build_unified_label_space",
    "fed_loss_class_weights",
    "label_key",
]


def label_key(name: str) -> str:
    """The form under which two label names are "identical": surrounding white space
    stripped, inner runs of white space or underscores one space, casefolded."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


@dataclass(frozen=True)
class UnifiedLabelSpace:
    """Args:
    names: the unified labels, in the order of the classifier's rows.
    datasets: the source datasets, in the order given to the builder.
    mappings: per dataset, the unified index of each of its contiguous class ids.
    merges: per unified label that several source labels became, its name and the
        (dataset, original name) pairs merged into it.
    """

    names: tuple[str, ...]
    datasets: tuple[str, ...]
    mappings: Mapping[str, tuple[int, ...]]
    merges: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.names)

    def mapping(self, dataset: str) -> tuple[int, ...]:
        """
        Args:
            dataset: one of ``datasets``.

        Returns:
            tuple[int]: the unified index of each of ``dataset``'s contiguous class ids.

        Raises:
            KeyError: ``dataset`` is not in this label space.
        """
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

    def report(self) -> str:
        """A text report: the label count per dataset and in the unified space, each merge
        (unified name <- dataset: original name, ...), and names that differ only in case or
        white space but were kept apart (``merge_identical=False``)."""
        sizes = ", ".join(f"{d}: {len(m)}" for d, m in self.mappings.items())
        lines = [f"unified label space: {len(self.names)} labels from {sizes}"]
        if self.merges:
            lines.append(f"{len(self.merges)} merged:")
            for name, sources in self.merges:
                src = ", ".join(f"{d}: {n!r}" for d, n in sources)
                lines.append(f"  {name!r} <- {src}")
        else:
            lines.append("nothing merged")
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            groups.setdefault(label_key(n), []).append(i)
        apart = [[self.names[i] for i in g] for g in groups.values() if len(g) > 1]
        if apart:
            lines.append(
                f"{len(apart)} names kept apart (one text embedding, separate labels): "
                + "; ".join(" / ".join(repr(n) for n in g) for g in apart[:20])
                + (" ..." if len(apart) > 20 else "")
            )
        return "\n".join(lines)

    def to_json(self) -> str:
        """
        Returns:
            str: the label space as json (``names``, ``datasets``, ``mappings``, ``merges``), which
            :meth:`from_json` reads back.
        """
        return json.dumps(
            {
                "names": list(self.names),
                "datasets": list(self.datasets),
                "mappings": {k: list(v) for k, v in self.mappings.items()},
                "merges": [[n, [list(s) for s in src]] for n, src in self.merges],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "UnifiedLabelSpace":
        """
        Args:
            text: json written by :meth:`to_json` (``merges`` may be absent).

        Returns:
            UnifiedLabelSpace: the label space.
        """
        d = json.loads(text)
        merges = tuple((n, tuple((ds, orig) for ds, orig in src)) for n, src in d.get("merges", []))
        return cls(
            tuple(d["names"]),
            tuple(d["datasets"]),
            {k: tuple(v) for k, v in d["mappings"].items()},
            merges,
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
        merge_identical: merge labels whose names are equal under :func:`label_key` (case and
            white space ignored) into one unified label, named as first seen (stripped). Also
            merges such duplicates within one dataset.

    Returns:
        The unified labels in first-seen order, each dataset's mapping into them, and the
        merges (see :meth:`UnifiedLabelSpace.report`).
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
    sources: dict[int, list[tuple[str, str]]] = {}
    mappings = {}
    for dataset, labels in per_dataset.items():
        if not labels:
            raise ValueError(f"dataset {dataset!r} has no labels")
        mapping = []
        for label in labels:
            name = str(label).strip()
            if not name:
                raise ValueError(f"dataset {dataset!r} has an empty label name")
            key = label_key(name)
            if merge_identical and key in index:
                mapping.append(index[key])
                sources[index[key]].append((dataset, str(label)))
                continue
            index.setdefault(key, len(names))
            sources[len(names)] = [(dataset, str(label))]
            mapping.append(len(names))
            names.append(name)
        mappings[dataset] = tuple(mapping)
    merges = tuple((names[i], tuple(src)) for i, src in sorted(sources.items()) if len(src) > 1)
    return UnifiedLabelSpace(tuple(names), tuple(per_dataset), mappings, merges)


def fed_loss_class_weights(datasets, merge_identical: bool = False, freq_weight_power: float = 0.5):
    """The federated loss's sampling weights over a unified label space, from the datasets'
    ``class_image_count`` metadata (detectron2 registers it for LVIS v1) through detectron2's
    ``get_fed_loss_cls_weights``: image count ** ``freq_weight_power`` (Detic: 0.5). Labels of
    datasets without that metadata get weight 0, so they are never drawn as negatives (as
    Detic does for classes outside its frequency file); a label merged from several datasets
    takes the largest weight.

    Args:
        datasets: registered dataset names (as for :func:`build_unified_label_space`).
        merge_identical: as for :func:`build_unified_label_space`.
        freq_weight_power: the power applied to the image counts.

    Returns:
        (C,) float32 tensor.
    """
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import get_fed_loss_cls_weights

    space = build_unified_label_space(datasets, merge_identical)
    weights = torch.zeros(len(space))
    used = []
    for dataset in space.datasets:
        if MetadataCatalog.get(dataset).get("class_image_count", None) is None:
            continue
        w = get_fed_loss_cls_weights([dataset], freq_weight_power).float()
        mapping = torch.tensor(space.mapping(dataset))
        if len(w) != len(mapping):
            raise ValueError(
                f"{dataset}: class_image_count has {len(w)} entries for {len(mapping)} classes"
            )
        weights.scatter_reduce_(0, mapping, w, "amax")
        used.append(dataset)
    if not used:
        raise ValueError(
            f"none of {list(space.datasets)} has class_image_count metadata (LVIS v1 has it): "
            "the federated loss has no class frequencies to sample negatives from"
        )
    return weights


class FedLossClassWeights:
    """:func:`fed_loss_class_weights` as a config value computed only when called, so a config
    can name it while the federated loss is off (its datasets need no ``class_image_count``
    then). ``ScaleDetOutputLayers`` calls it when ``use_fed_loss`` is on."""

    def __init__(self, datasets, merge_identical: bool = False, freq_weight_power: float = 0.5):
        self.datasets = datasets
        self.merge_identical = merge_identical
        self.freq_weight_power = freq_weight_power

    def __call__(self):
        return fed_loss_class_weights(self.datasets, self.merge_identical, self.freq_weight_power)
