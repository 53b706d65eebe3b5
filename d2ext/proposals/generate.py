"""Proposal generation over many images: parallel, sharded, resumable."""

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np

from .backends import BACKENDS, DEFAULT_BACKEND, ProposalInputError, load_image_rgb
from .cache import ProposalWriter
from .filters import ProposalFilter

__all__ = [
    "GenerationSummary",
    "dataset_items",
    "generate_proposals",
    "proposals_for_image",
    "shard_items",
]

logger = logging.getLogger(__name__)


@dataclass
class GenerationSummary:
    done: int = 0
    skipped: int = 0  # already in the cache (resume)
    empty: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    boxes: int = 0
    stages: Counter = field(default_factory=Counter)  # which filter stage kept each image
    seconds: float = 0.0

    def __str__(self) -> str:
        per = self.boxes / max(self.done - self.empty, 1)
        lines = [
            f"images done {self.done}, skipped (already cached) {self.skipped}, "
            f"empty {self.empty}, failed {len(self.failed)}; {per:.1f} boxes per non-empty "
            f"image; {self.seconds:.1f} s",
            f"filter stages: {dict(self.stages)}",
        ]
        lines += [f"  failed {k}: {v}" for k, v in sorted(self.failed.items())]
        return "\n".join(lines)


def dataset_items(name: str) -> list[tuple[str, str]]:
    """(key, image path) of every image of a registered dataset; the key is the dataset
    dict's ``image_id`` as a string, what ``DatasetProposals(key="image_id")`` looks up."""
    from detectron2.data import DatasetCatalog

    from d2ext.data import register_all_datasets

    register_all_datasets()
    return [(str(d["image_id"]), d["file_name"]) for d in DatasetCatalog.get(name)]


def shard_items(items: Sequence, shard: int, num_shards: int) -> list:
    """Every num_shards-th item from ``shard``: shards split the work without coordination."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in [0, {num_shards})")
    return list(items[shard::num_shards])


def proposals_for_image(path: str, backend: str, filt: ProposalFilter | None, backend_kwargs):
    """(image size, XYXY boxes after filtering, filter stage) of one image; raises
    ProposalInputError for images that cannot be processed."""
    image = load_image_rgb(path)
    xywh = BACKENDS[backend](image, **backend_kwargs)
    size = image.shape[:2]
    if filt is not None:
        xywh, stage = filt(xywh, size)
    else:
        stage = "unfiltered" if len(xywh) else "empty"
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return size, xyxy.astype(np.float32), stage


def _work(args):
    key, path, backend, filt, backend_kwargs = args
    try:
        return key, proposals_for_image(path, backend, filt, backend_kwargs), None
    except ProposalInputError as e:
        return key, None, str(e)


def generate_proposals(
    items: Sequence[tuple[str, str]],
    out_dir: str,
    backend: str = DEFAULT_BACKEND,
    filt: ProposalFilter | None = None,
    shard: int = 0,
    num_shards: int = 1,
    workers: int = 1,
    chunk_size: int = 64,
    backend_kwargs: dict | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Writes the proposals of this shard's share of ``items`` ((key, image path) pairs) to
    the cache at ``out_dir``, skipping keys already there.

    Args:
        filt: applied before storing (None: store every box).
        workers: processes; each runs the backend on one image at a time.
        chunk_size: images per cache chunk (the most a kill loses).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {sorted(BACKENDS)}")
    writer = ProposalWriter(out_dir, shard, num_shards, chunk_size=chunk_size)
    mine = shard_items(list(items), shard, num_shards)
    done = writer.done_keys()
    todo = [(k, p) for k, p in mine if str(k) not in done]
    summary = GenerationSummary(skipped=len(mine) - len(todo))
    jobs = [(k, p, backend, filt, backend_kwargs or {}) for k, p in todo]
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"proposals shard {shard}/{num_shards}", unit="img")
    pool = get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap_unordered(_work, jobs) if pool else map(_work, jobs)
        for key, result, error in results:
            if error is not None:
                writer.add_failed(key, error)
                summary.failed[str(key)] = error
            else:
                size, boxes, stage = result
                writer.add(key, size, boxes)
                summary.done += 1
                summary.boxes += len(boxes)
                summary.empty += len(boxes) == 0
                summary.stages[stage] += 1
            if bar is not None:
                bar.update(1)
        writer.flush()
    finally:
        if pool is not None:
            pool.terminate()
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
