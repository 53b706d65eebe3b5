"""A compact, memory-mapped, crash-safe store of per-image proposal boxes.

Layout (one folder per shard, written without coordination by ``--shard i/N`` jobs)::

    ROOT/shard-00000-of-00004/chunk-000000/{keys,sizes,offsets,boxes}.npy + meta.json
    ROOT/shard-00000-of-00004/chunk-000001/...

A chunk holds a batch of images: ``keys`` (unicode [n], the image key: file name or image id
as a string), ``sizes`` (int32 [n, 2], H and W), ``offsets`` (int64 [n + 1]) into ``boxes``
(float32 [M, 4], XYXY absolute pixels), and ``meta.json`` (images that failed or came out
empty, with reasons). Each chunk is written to a temporary folder and renamed into place, so a
job killed at any moment leaves only complete chunks; a rerun skips the keys they hold. No
pickle anywhere: the arrays are plain ``.npy`` files, opened with ``mmap_mode="r"``, and a
reader finds an image's boxes in O(1) through a dict from key to (chunk, row).
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np

__all__ = ["ProposalCache", "ProposalWriter", "shard_dirname"]

_CHUNK = re.compile(r"^chunk-(\d{6})$")
_ARRAYS = ("keys", "sizes", "offsets", "boxes")


def shard_dirname(shard: int, num_shards: int) -> str:
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in [0, {num_shards})")
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def _chunk_dirs(shard_dir: str) -> list[str]:
    if not os.path.isdir(shard_dir):
        return []
    names = sorted(n for n in os.listdir(shard_dir) if _CHUNK.match(n))
    return [os.path.join(shard_dir, n) for n in names]


class ProposalWriter:
    """Appends images to one shard, a chunk at a time.

    Args:
        root: the cache folder.
        shard, num_shards: which shard this process writes.
        chunk_size: images per chunk (the most a kill can lose).
    """

    def __init__(self, root: str, shard: int = 0, num_shards: int = 1, chunk_size: int = 256):
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.dir = os.path.join(root, shard_dirname(shard, num_shards))
        os.makedirs(self.dir, exist_ok=True)
        self.chunk_size = chunk_size
        self._pending: list[tuple[str, tuple[int, int], np.ndarray]] = []
        self._failed: dict[str, str] = {}
        self._empty: dict[str, str] = {}
        chunks = _chunk_dirs(self.dir)
        self._next = int(_CHUNK.match(os.path.basename(chunks[-1])).group(1)) + 1 if chunks else 0

    def done_keys(self) -> set[str]:
        """Keys already stored (boxes, empty or failed) in this shard's complete chunks."""
        done: set[str] = set()
        for chunk in _chunk_dirs(self.dir):
            done.update(np.load(os.path.join(chunk, "keys.npy")).tolist())
            with open(os.path.join(chunk, "meta.json")) as f:
                done.update(json.load(f)["failed"])
        return done

    def add(self, key: str, image_size: tuple[int, int], boxes_xyxy: np.ndarray) -> None:
        """One image's boxes ([N, 4] XYXY absolute pixels; N may be 0)."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{key}: boxes contain NaN or Inf")
        self._pending.append((str(key), (int(image_size[0]), int(image_size[1])), boxes))
        if len(boxes) == 0:
            self._empty[str(key)] = "no proposal left"
        self._maybe_flush()

    def add_failed(self, key: str, reason: str) -> None:
        """An image that could not be processed; recorded with its reason, never retried."""
        self._failed[str(key)] = reason
        self._maybe_flush()

    def _maybe_flush(self):
        if len(self._pending) + len(self._failed) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Writes the pending images as one complete chunk (temporary folder, then rename)."""
        if not self._pending and not self._failed:
            return
        keys = np.array([k for k, _, _ in self._pending], dtype=np.str_)
        sizes = np.array([s for _, s, _ in self._pending], dtype=np.int32).reshape(-1, 2)
        counts = [len(b) for _, _, b in self._pending]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        boxes = (
            np.concatenate([b for _, _, b in self._pending])
            if self._pending
            else np.zeros((0, 4), np.float32)
        )
        tmp = tempfile.mkdtemp(dir=self.dir, prefix=".tmp-chunk-")
        try:
            for name, arr in zip(_ARRAYS, (keys, sizes, offsets, boxes), strict=True):
                with open(os.path.join(tmp, f"{name}.npy"), "wb") as f:
                    np.save(f, arr)
                    f.flush()
                    os.fsync(f.fileno())
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump({"failed": self._failed, "empty": self._empty}, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(self.dir, f"chunk-{self._next:06d}"))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._next += 1
        self._pending, self._failed, self._empty = [], {}, {}


class ProposalCache:
    """Read side: every complete chunk under ``root``, memory-mapped.

    ``cache[key]`` -> float32 [N, 4] XYXY boxes (a copy); ``cache.size(key)`` -> (H, W);
    ``cache.failed`` / ``cache.empty`` -> {key: reason}.
    """

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"no proposal cache at {root!r}")
        self._chunks: list[dict[str, np.ndarray]] = []
        self._where: dict[str, tuple[int, int]] = {}
        self.failed: dict[str, str] = {}
        self.empty: dict[str, str] = {}
        shard_dirs = sorted(
            os.path.join(root, d) for d in os.listdir(root) if d.startswith("shard-")
        )
        for shard_dir in shard_dirs:
            for chunk in _chunk_dirs(shard_dir):
                arrays = {
                    name: np.load(os.path.join(chunk, f"{name}.npy"), mmap_mode="r")
                    for name in _ARRAYS
                }
                with open(os.path.join(chunk, "meta.json")) as f:
                    meta = json.load(f)
                self.failed.update(meta["failed"])
                self.empty.update(meta["empty"])
                index = len(self._chunks)
                self._chunks.append(arrays)
                for row, key in enumerate(arrays["keys"].tolist()):
                    self._where[key] = (index, row)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key) -> bool:
        return str(key) in self._where

    def keys(self):
        return self._where.keys()

    def _lookup(self, key) -> tuple[dict[str, np.ndarray], int]:
        try:
            index, row = self._where[str(key)]
        except KeyError:
            reason = self.failed.get(str(key))
            why = f" (it failed: {reason})" if reason else ""
            raise KeyError(f"no proposals for image {key!r}{why}") from None
        return self._chunks[index], row

    def __getitem__(self, key) -> np.ndarray:
        chunk, row = self._lookup(key)
        start, end = chunk["offsets"][row], chunk["offsets"][row + 1]
        return np.array(chunk["boxes"][start:end])

    def size(self, key) -> tuple[int, int]:
        chunk, row = self._lookup(key)
        h, w = chunk["sizes"][row]
        return int(h), int(w)
