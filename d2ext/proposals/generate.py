"""Proposal generation over many images: parallel, sharded, resumable."""

import dataclasses
import inspect
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np

from .backends import BACKENDS, DEFAULT_BACKEND, ProposalInputError, load_image_rgb
from .cache import DuplicateKeyError, ProposalWriter, read_cache_keys
from .filters import ProposalFilter

__all__ = [
    "GenerationSummary",
    "WorkerDiedError",
    "check_unique_keys",
    "dataset_items",
    "generate_proposals",
    "generation_settings",
    "proposals_for_image",
    "shard_items",
]

logger = logging.getLogger(__name__)


class WorkerDiedError(RuntimeError):
    """A worker process died (killed by a signal, e.g. the out-of-memory killer, or exited).

    Attributes:
        in_flight: keys of the images the workers were processing or had queued; one of them
            was being processed by the worker that died. None of them is recorded.
        saved: images of this run written to the cache before the error.
    """

    def __init__(self, message: str, in_flight: list[str], saved: int):
        super().__init__(message)
        self.in_flight = in_flight
        self.saved = saved


@dataclass
class GenerationSummary:
    """The counts of a :func:`generate_proposals` run; ``str()`` gives a report.

    Args:
        done: images processed in this run.
        skipped: images skipped because already in the cache, or recorded as failed.
        empty: processed images without a box.
        failed: {key: error} of the images that failed in this run.
        boxes: the boxes written in this run.
        stages: per filter stage, the number of images for which it kept the boxes.
        seconds: the run's wall time.
        skipped_failed: of ``skipped``, the images recorded as failed by an earlier run.
    """

    done: int = 0
    skipped: int = 0  # already in the cache (resume), previously failed ones included
    empty: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    boxes: int = 0
    stages: Counter = field(default_factory=Counter)  # which filter stage kept each image
    seconds: float = 0.0
    skipped_failed: int = 0  # of ``skipped``: recorded as failed by an earlier run

    def __str__(self) -> str:
        per = self.boxes / max(self.done - self.empty, 1)
        lines = [
            f"images done {self.done}, skipped {self.skipped} (already cached "
            f"{self.skipped - self.skipped_failed}, previously failed {self.skipped_failed}"
            f"{': --retry-failed retries them' if self.skipped_failed else ''}), "
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


def check_unique_keys(items: Sequence[tuple[str, str]]) -> None:
    """Raises :class:`DuplicateKeyError` naming the first key given to two images."""
    seen: dict[str, str] = {}
    for key, path in items:
        key = str(key)
        if key in seen:
            raise DuplicateKeyError(
                f"two images have the key {key!r}: {seen[key]} and {path}; keys must be unique "
                "(with --images, keys are paths relative to the images' common folder)"
            )
        seen[key] = path


def shard_items(items: Sequence, shard: int, num_shards: int) -> list:
    """Every num_shards-th item from ``shard``: shards split the work without coordination."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in [0, {num_shards})")
    return list(items[shard::num_shards])


def generation_settings(
    backend: str, filt: ProposalFilter | None, backend_kwargs: dict | None = None
) -> dict:
    """What a cache records about how its proposals were made: the backend, its
    selective-search parameters (defaults filled in) and the filter with its parameters.

    Raises:
        ValueError: an unknown backend or backend parameter.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {sorted(BACKENDS)}")
    params = dict(list(inspect.signature(BACKENDS[backend]).parameters.items())[1:])
    unknown = sorted(set(backend_kwargs or {}) - set(params))
    if unknown:
        raise ValueError(f"backend {backend!r} has no parameter {unknown}; it takes {list(params)}")
    search = {name: p.default for name, p in params.items()}
    search.update(backend_kwargs or {})
    if filt is None:
        filter_record = None
    else:
        named = filt if inspect.isfunction(filt) else type(filt)
        filter_record = {"class": f"{named.__module__}.{named.__qualname__}"}
        if dataclasses.is_dataclass(filt):
            filter_record.update(dataclasses.asdict(filt))
        elif not inspect.isfunction(filt) and " at 0x" not in repr(filt):
            filter_record["repr"] = repr(filt)
        if isinstance(filt, ProposalFilter):
            filter_record["name"] = filt.name
    return {"format": 1, "backend": backend, "selective_search": search, "filter": filter_record}


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
    except MemoryError as e:
        return key, None, f"out of memory: {e}"


def _parallel(jobs: list, workers: int):
    """Yields ``_work``'s results from ``workers`` spawned processes, at most 2 images per
    worker in flight. A dead worker raises :class:`WorkerDiedError` (where
    ``multiprocessing.Pool`` would wait forever)."""
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    in_flight: dict[Future, str] = {}
    next_job = 0
    try:
        while next_job < len(jobs) or in_flight:
            while next_job < len(jobs) and len(in_flight) < 2 * workers:
                job = jobs[next_job]
                in_flight[executor.submit(_work, job)] = str(job[0])
                next_job += 1
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:  # results handed back before a death come first
                if isinstance(future.exception(), BrokenProcessPool):
                    broken = True
                    continue
                result = future.result()
                del in_flight[future]
                yield result
            if broken:
                raise WorkerDiedError("", sorted(in_flight.values()), 0)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


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
    retry_failed: bool = False,
    overwrite: bool = False,
) -> GenerationSummary:
    """Writes the proposals of this shard's share of ``items`` ((key, image path) pairs) to
    the cache at ``out_dir``, skipping keys already there (in any shard).

    Before any image is processed: keys must be unique over all ``items``, and the cache's
    recorded settings (backend, its parameters, filter and its parameters) must be this run's.
    A worker that dies stops the job; every image finished before is in the cache, so a rerun
    resumes.

    Args:
        filt: applied before storing (None: store every box).
        workers: processes; each runs the backend on one image at a time (1: in this process).
        chunk_size: images per cache chunk (the most a kill of this process loses).
        retry_failed: process again the images recorded as failed by earlier runs (without
            it they are skipped and counted in ``skipped_failed``).
        overwrite: delete a cache at ``out_dir`` made with other settings (or recording none)
            and start afresh, instead of raising :class:`CacheSettingsError`.

    Raises:
        DuplicateKeyError: two items share a key.
        CacheSettingsError: the cache was made with other settings.
        CacheLockedError: another live process writes this shard.
        WorkerDiedError: a worker process died.
    """
    items = list(items)
    check_unique_keys(items)
    settings = generation_settings(backend, filt, backend_kwargs)
    mine = shard_items(items, shard, num_shards)
    writer = ProposalWriter(
        out_dir, shard, num_shards, chunk_size=chunk_size, settings=settings, overwrite=overwrite
    )
    summary = GenerationSummary()
    bar = None
    start = time.perf_counter()
    saved = 0
    results = None
    try:
        stored, failed_before = read_cache_keys(out_dir)
        todo = []
        for k, p in mine:
            if str(k) in stored:
                summary.skipped += 1
            elif str(k) in failed_before and not retry_failed:
                summary.skipped += 1
                summary.skipped_failed += 1
            else:
                todo.append((k, p))
        jobs = [(k, p, backend, filt, backend_kwargs or {}) for k, p in todo]
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=f"proposals shard {shard}/{num_shards}", unit="img")
        results = _parallel(jobs, workers) if workers > 1 else map(_work, jobs)
        try:
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
                saved += 1
                if bar is not None:
                    bar.update(1)
        except WorkerDiedError as e:
            writer.flush()
            shown = ", ".join(e.in_flight[:8]) + (", ..." if len(e.in_flight) > 8 else "")
            raise WorkerDiedError(
                f"a proposal worker process died (killed by a signal, e.g. the out-of-memory "
                f"killer, or exited) while processing one of: {shown}. Images finished in this "
                f"run: {saved}, saved in {out_dir}; rerun the same command to resume (with "
                "fewer --workers if memory ran out)",
                e.in_flight,
                saved,
            ) from None
        writer.flush()
    finally:
        if bar is not None:
            bar.close()
        if hasattr(results, "close"):
            results.close()  # stops the workers
        try:
            writer.close()  # finished images are written even when the loop raised
        except Exception:
            logger.exception("could not write the last chunk to %s", out_dir)
    summary.seconds = time.perf_counter() - start
    return summary
