#!/usr/bin/env python
"""Selective-search proposals for a registered dataset or a folder of images.

    python tools/generate_proposals.py --images DIR_OR_GLOB --out CACHE_DIR \\
        [--backend d2ext | selectivesearch] [--filter ratio3size0308 | ratio3size0008 | none] \\
        [--shard i/N] [--workers K] [--retry-failed] [--overwrite]
    python tools/generate_proposals.py --dataset d2ext_demo_unlabeled --out CACHE_DIR ...

Keys: for --dataset, the dataset dicts' image_id (as a string); for --images, the path
relative to the folder, or, for a glob, relative to the deepest folder holding every match
(a/img.png and b/img.png stay two keys). Two images with one key stop the job before any
work. Rerunning skips images already in the cache and images recorded as failed (unless
--retry-failed); shards of one job write separate folders of the same cache. The cache
records the backend, filter and their parameters: rerunning with other ones stops with an
error (--overwrite deletes such a cache and starts afresh). One process at a time writes a
shard: a second one stops with "in use by PID". A dead worker process (e.g. killed by the
out-of-memory killer) stops the job with every finished image saved; rerun to resume.
"""

import argparse
import glob
import os
import sys

from d2ext.proposals import (
    BACKENDS,
    DEFAULT_BACKEND,
    FILTERS,
    dataset_items,
    filter_from_name,
    generate_proposals,
)
from d2ext.proposals.cache import CacheLockedError, CacheSettingsError, DuplicateKeyError
from d2ext.proposals.generate import WorkerDiedError, check_unique_keys


def list_images(spec: str) -> list[tuple[str, str]]:
    """(key, path) of every image in a folder (recursively) or file matching a glob; a glob's
    keys are paths relative to the deepest folder that holds every match."""
    if os.path.isdir(spec):
        from d2ext.data.datasets import list_image_folder

        return list_image_folder(spec)
    paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [(os.path.relpath(os.path.abspath(p), root), p) for p in paths]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a dataset registered in detectron2's DatasetCatalog")
    src.add_argument("--images", help="a folder (searched recursively) or a glob")
    parser.add_argument("--out", required=True, help="cache folder")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=sorted(BACKENDS))
    parser.add_argument("--filter", default="ratio3size0308", help=f"{sorted(FILTERS)} or none")
    parser.add_argument("--shard", default="0/1", help="i/N: this process's share of the work")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes, one image at a time each (1: in this process); default: all cores",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=64,
        help="images per cache chunk: the most a kill of this process loses",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="process again the images an earlier run recorded as failed",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete a cache at --out made with another backend, filter or parameters (or "
        "recording none) and start afresh; a cache with the same settings is resumed",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        shard, num_shards = (int(x) for x in args.shard.split("/"))
    except ValueError:
        raise SystemExit(f"--shard takes i/N, got {args.shard!r}") from None
    filt = None if args.filter == "none" else filter_from_name(args.filter)
    items = dataset_items(args.dataset) if args.dataset else list_images(args.images)
    if not items:
        raise SystemExit(f"no images found in {args.dataset or args.images!r}")
    try:
        check_unique_keys(items)
        summary = generate_proposals(
            items,
            args.out,
            backend=args.backend,
            filt=filt,
            shard=shard,
            num_shards=num_shards,
            workers=args.workers,
            chunk_size=args.chunk_size,
            progress=not args.no_progress,
            retry_failed=args.retry_failed,
            overwrite=args.overwrite,
        )
    except (CacheLockedError, CacheSettingsError, DuplicateKeyError, WorkerDiedError) as e:
        raise SystemExit(f"error: {e}") from None
    print(summary)
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
