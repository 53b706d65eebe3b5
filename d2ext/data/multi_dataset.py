"""Training on several registered datasets at once: their dicts tagged with the source dataset
(class ids optionally remapped into a unified label space), and a sampler that mixes them by
ratio or draws each batch from one dataset."""

import itertools
import logging
from collections.abc import Mapping, Sequence

import torch
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.utils import comm
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

__all__ = ["MultiDatasetSampler", "build_multi_dataset_train_loader", "load_multi_dataset_dicts"]


def load_multi_dataset_dicts(
    names: Sequence[str],
    mappings: Mapping[str, Sequence[int]] | None = None,
    filter_empty: bool = True,
) -> tuple[list[dict], list[int]]:
    """Loads and concatenates registered datasets.

    Args:
        names: registered dataset names.
        mappings: per dataset, the new class id of each of its contiguous class ids (e.g. a
            unified label space's mapping); None keeps the ids.
        filter_empty: drop images without (non-crowd) annotations.

    Returns:
        (dicts, sizes): every record gains ``dataset_name`` and ``dataset_index``; records are
        grouped by dataset in the order of ``names`` and ``sizes`` counts each group.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("no datasets given")
    dicts, sizes = [], []
    for k, name in enumerate(names):
        records = DatasetCatalog.get(name)
        mapping = None if mappings is None else list(mappings[name])
        kept = 0
        for r in records:
            anns = r.get("annotations", [])
            if filter_empty and not any(a.get("iscrowd", 0) == 0 for a in anns):
                continue
            r = dict(r, dataset_name=name, dataset_index=k)
            if mapping is not None and anns:
                new = []
                for a in anns:
                    c = a["category_id"]
                    if not 0 <= c < len(mapping):
                        raise ValueError(
                            f"{name}: category_id {c} outside its {len(mapping)} classes "
                            f"(image {r.get('file_name')})"
                        )
                    new.append(dict(a, category_id=mapping[c]))
                r["annotations"] = new
            dicts.append(r)
            kept += 1
        if kept == 0:
            raise ValueError(f"dataset {name!r} has no usable images")
        logger.info(f"{name}: {kept} of {len(records)} images")
        sizes.append(kept)
    return dicts, sizes


class MultiDatasetSampler(Sampler):
    """An infinite sampler over datasets concatenated in order (sizes n_0, n_1, ...).

    Each dataset is walked in reshuffled epochs; which dataset a sample comes from is drawn
    with probability ``ratios[k] / sum(ratios)``, per sample (mixed batches) or, with
    ``one_dataset_per_batch``, once per batch of ``batch_size`` samples. The stream is cut in
    chunks of ``batch_size`` shared round-robin among ranks, so every rank's batch (and, with
    detectron2's loader, every worker's) is one chunk.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        ratios: Sequence[float] | None = None,
        batch_size: int = 1,
        one_dataset_per_batch: bool = False,
        shuffle: bool = True,
        seed: int | None = None,
    ):
        """
        Args:
            sizes: images per dataset, in the concatenation order.
            ratios: sampling weight per dataset (default equal).
            batch_size: images per batch on one rank.
            one_dataset_per_batch: every batch from a single dataset.
            shuffle: reshuffle each dataset every epoch (else its natural order).
            seed: shared across ranks (default: a shared random seed).
        """
        sizes = [int(s) for s in sizes]
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"every dataset needs images, got sizes {sizes}")
        ratios = [1.0] * len(sizes) if ratios is None else [float(r) for r in ratios]
        if len(ratios) != len(sizes):
            raise ValueError(f"{len(ratios)} ratios for {len(sizes)} datasets")
        if min(ratios) < 0 or sum(ratios) <= 0:
            raise ValueError(f"ratios must be >= 0 with a positive sum, got {ratios}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sizes = sizes
        self.offsets = [0, *itertools.accumulate(sizes)][:-1]
        self.ratios = torch.tensor(ratios, dtype=torch.float64) / sum(ratios)
        self.batch_size = batch_size
        self.one_dataset_per_batch = one_dataset_per_batch
        self.shuffle = shuffle
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()

    def _dataset_streams(self, g: torch.Generator):
        def stream(k):
            while True:
                order = torch.randperm(self.sizes[k], generator=g) if self.shuffle else None
                for i in range(self.sizes[k]):
                    yield self.offsets[k] + int(order[i] if order is not None else i)

        return [stream(k) for k in range(len(self.sizes))]

    def chunks(self):
        """The global stream of batches (lists of indices), before sharding by rank."""
        g = torch.Generator().manual_seed(self.seed)
        streams = self._dataset_streams(g)
        while True:
            if self.one_dataset_per_batch:
                k = int(torch.multinomial(self.ratios, 1, generator=g))
                yield [next(streams[k]) for _ in range(self.batch_size)]
            else:
                ks = torch.multinomial(self.ratios, self.batch_size, True, generator=g)
                yield [next(streams[int(k)]) for k in ks]

    def __iter__(self):
        for chunk in itertools.islice(self.chunks(), self.rank, None, self.world_size):
            yield from chunk


def build_multi_dataset_train_loader(
    names: Sequence[str],
    mapper,
    total_batch_size: int,
    mappings: Mapping[str, Sequence[int]] | None = None,
    ratios: Sequence[float] | None = None,
    one_dataset_per_batch: bool = False,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    filter_empty: bool = True,
    seed: int | None = None,
):
    """detectron2's train loader over several datasets with :class:`MultiDatasetSampler`.
    ``one_dataset_per_batch`` turns aspect-ratio grouping off (grouping would mix batches)."""
    dicts, sizes = load_multi_dataset_dicts(names, mappings, filter_empty)
    world = comm.get_world_size()
    if total_batch_size % world:
        raise ValueError(f"total_batch_size {total_batch_size} not divisible by {world} ranks")
    sampler = MultiDatasetSampler(
        sizes, ratios, total_batch_size // world, one_dataset_per_batch, seed=seed
    )
    dataset = MapDataset(DatasetFromList(dicts, copy=False), mapper)
    return build_detection_train_loader(
        dataset=dataset,
        mapper=None,
        sampler=sampler,
        total_batch_size=total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping and not one_dataset_per_batch,
        num_workers=num_workers,
    )
