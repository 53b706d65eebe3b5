"""A compact, memory-mapped, crash-safe store of per-image proposal boxes.

Layout (one folder per shard, written without coordination by ``--shard i/N`` jobs)::

    ROOT/settings.json                      backend, filter and their parameters
    ROOT/shard-00000-of-00004/.lock         PID of the process writing this shard
    ROOT/shard-00000-of-00004/chunk-000000/{keys,sizes,offsets,boxes}.npy + meta.json
    ROOT/shard-00000-of-00004/chunk-000001/...

A chunk holds a batch of images: ``keys`` (unicode [n], the image key: a path relative to the
image folder or an image id, as a string), ``sizes`` (int32 [n, 2], H and W), ``offsets``
(int64 [n + 1]) into ``boxes`` (float32 [M, 4], XYXY absolute pixels), and ``meta.json``
(images that failed or came out empty, with reasons). Each chunk is written to a temporary
folder and renamed into place, so a job killed at any moment leaves only complete chunks; a
rerun skips the keys they hold. No pickle anywhere: the arrays are plain ``.npy`` files, opened
with ``mmap_mode="r"``, and a reader finds an image's boxes in O(1) through a dict from key to
(chunk, row).

The boxes are inclusive pixels (x2 is the last pixel, as selective search reports them) unless
``settings.json`` records ``box_convention: "continuous"`` (x2 = x1 + width: ground-truth
boxes); :func:`box_convention` reads the record, and
:class:`d2ext.proposals.DatasetProposals` gives every reader the convention it asks for.

A key is stored with boxes at most once in a cache: the writer refuses a key it already holds,
and the reader refuses a cache holding one twice. A key recorded as failed may be written
again (a retry); the latest record of a key wins. One process at a time writes a shard: the
writer holds an exclusive lock (``fcntl.flock``) on the shard's ``.lock`` file, which carries
its PID. Folders and files are created with the user's umask.
"""

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket

import numpy as np

from d2ext.utils.io import atomic_write_bytes

__all__ = [
    "BOX_CONVENTIONS",
    "CacheLockedError",
    "CacheSettingsError",
    "DuplicateKeyError",
    "ProposalCache",
    "ProposalWriter",
    "box_convention",
    "convert_box_convention",
    "read_box_convention",
    "read_cache_keys",
    "shard_dirname",
]

logger = logging.getLogger(__name__)

_CHUNK = re.compile(r"^chunk-(\d{6})$")
_ARRAYS = ("keys", "sizes", "offsets", "boxes")
_LOCK = ".lock"
_TMP_PREFIX = ".tmp-chunk-"
SETTINGS_FILE = "settings.json"
_HOST = socket.gethostname().replace(" ", "_") or "localhost"
# how a cache's XYXY boxes end: "inclusive" (x2 = the last pixel; selective search, the default)
# or "continuous" (x2 = x1 + width; COCO boxes), recorded as settings["box_convention"]
BOX_CONVENTIONS = ("inclusive", "continuous")
_CONVENTION_KEY = "box_convention"


class DuplicateKeyError(ValueError):
    """Two images with one key, or a key written to a cache that already holds it."""


class CacheSettingsError(ValueError):
    """A cache made with other settings (backend, filter, parameters) than the current run."""


class CacheLockedError(RuntimeError):
    """A shard that another live process is writing."""


def box_convention(settings: dict | None) -> str:
    """The box convention of a cache with these recorded settings.

    Args:
        settings: a cache's ``settings.json`` (None: a cache without one).

    Returns:
        str: ``settings["box_convention"]`` when recorded; "continuous" for a cache of
        ``backend: "ground_truth"`` recorded without it (the demo's ground-truth caches written
        before the key); else "inclusive" (selective search, converters).

    Raises:
        CacheSettingsError: the record names another convention than :data:`BOX_CONVENTIONS`.
    """
    if not isinstance(settings, dict):
        return "inclusive"
    if _CONVENTION_KEY in settings:
        recorded = settings[_CONVENTION_KEY]
        if recorded not in BOX_CONVENTIONS:
            raise CacheSettingsError(f"box_convention {recorded!r} is not one of {BOX_CONVENTIONS}")
        return recorded
    return "continuous" if settings.get("backend") == "ground_truth" else "inclusive"


def read_box_convention(root: str) -> str:
    """:func:`box_convention` of the cache at ``root`` (from its ``settings.json`` alone)."""
    path = os.path.join(root, SETTINGS_FILE)
    if not os.path.isfile(path):
        return "inclusive"
    with open(path) as f:
        return box_convention(json.load(f))


def convert_box_convention(boxes: np.ndarray, src: str, dst: str) -> np.ndarray:
    """XYXY boxes from one convention to another: continuous = inclusive + (0, 0, 1, 1).

    Args:
        boxes: float [N, 4] XYXY boxes.
        src, dst: conventions of :data:`BOX_CONVENTIONS`.

    Returns:
        np.ndarray: float32 [N, 4] (a new array).
    """
    for c in (src, dst):
        if c not in BOX_CONVENTIONS:
            raise ValueError(f"box convention {c!r} is not one of {BOX_CONVENTIONS}")
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    if src != dst:
        sign = 1 if dst == "continuous" else -1
        boxes += np.array([0, 0, sign, sign], np.float32)
    return boxes


def shard_dirname(shard: int, num_shards: int) -> str:
    """
    Args:
        shard: the shard's index.
        num_shards: the number of shards.

    Returns:
        str: the shard's folder name, ``shard-{shard:05d}-of-{num_shards:05d}``.

    Raises:
        ValueError: ``shard`` is not in [0, num_shards).
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in [0, {num_shards})")
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def _chunk_dirs(shard_dir: str) -> list[str]:
    if not os.path.isdir(shard_dir):
        return []
    names = sorted(n for n in os.listdir(shard_dir) if _CHUNK.match(n))
    return [os.path.join(shard_dir, n) for n in names]


def _shard_dirs(root: str) -> list[str]:
    if not os.path.isdir(root):
        return []
    return sorted(
        os.path.join(root, d)
        for d in os.listdir(root)
        if d.startswith("shard-") and os.path.isdir(os.path.join(root, d))
    )


def _read_chunk_meta(chunk: str) -> dict:
    with open(os.path.join(chunk, "meta.json")) as f:
        return json.load(f)


def _scan_shard(shard_dir: str, stored: set[str], failed: dict[str, str]) -> None:
    """Adds the shard's keys with boxes to ``stored`` and its failures to ``failed``; a key
    written in a later chunk than its failure is not failed any more."""
    for chunk in _chunk_dirs(shard_dir):
        keys = np.load(os.path.join(chunk, "keys.npy")).tolist()
        stored.update(keys)
        for key in keys:
            failed.pop(key, None)
        failed.update(_read_chunk_meta(chunk)["failed"])


def read_cache_keys(root: str) -> tuple[set[str], dict[str, str]]:
    """(keys stored with boxes, {key: reason} of images whose latest record is a failure) over
    every shard's complete chunks under ``root``; ({}, {}) when there is no cache."""
    stored: set[str] = set()
    failed: dict[str, str] = {}
    for shard_dir in _shard_dirs(root):
        _scan_shard(shard_dir, stored, failed)
    for key in stored:
        failed.pop(key, None)
    return stored, failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ShardLock:
    """An exclusive ``flock`` on ``shard_dir/.lock``, which holds the owner's PID and host.

    The kernel drops the lock when its process dies (``kill -9`` and the OOM killer included);
    a lock file naming a process that no longer holds it is taken over with a log line. The
    file is never deleted (deleting a lock file races with processes opening it). On a file
    system without ``flock`` the PID alone decides: a live process on this host, or any
    process on another host, keeps the shard."""

    def __init__(self, shard_dir: str):
        self.path = os.path.join(shard_dir, _LOCK)
        self._fd = None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                raise self._in_use(shard_dir, *self._owner(fd)) from None
            except OSError as e:
                locked = False
                logger.warning("no flock on %s (%s); locking by PID alone", self.path, e)
            pid, host = self._owner(fd)
            if pid is not None and (pid, host) != (os.getpid(), _HOST):
                if host == _HOST and not _pid_alive(pid):
                    state = "no longer running"
                elif locked:
                    state = "not holding it"
                else:
                    raise self._in_use(shard_dir, pid, host)
                where = "" if host == _HOST else f" on host {host}"
                logger.warning(
                    "taking over the stale lock %s of PID %s%s (%s)", self.path, pid, where, state
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {_HOST}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _owner(fd: int) -> tuple[int | None, str]:
        """(PID, host) written in the lock file; (None, "") for an empty or garbled one."""
        fields = os.pread(fd, 256, 0).decode(errors="replace").split()
        if not fields or not fields[0].isdigit():
            return None, ""
        return int(fields[0]), fields[1] if len(fields) > 1 else _HOST

    def _in_use(self, shard_dir: str, pid: int | None, host: str) -> CacheLockedError:
        where = "" if host in ("", _HOST) else f" on host {host}"
        return CacheLockedError(
            f"proposal cache shard {shard_dir} is in use by PID {pid or 'unknown'}{where} "
            f"(lock file {self.path}); wait for that process to end, or stop it, before "
            "writing this shard"
        )

    def release(self) -> None:
        """Empties the lock file and closes it, which drops the lock (nothing if not held)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _normalized(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True, default=repr))


def _differences(recorded, current, prefix: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(current, dict):
        return [
            line
            for k in sorted(set(recorded) | set(current))
            for line in _differences(recorded.get(k), current.get(k), f"{prefix}{k}.")
        ]
    if recorded == current:
        return []
    return [f"{prefix[:-1]}: cache {recorded!r}, this run {current!r}"]


def _wipe(root: str) -> None:
    """Deletes the cache's shard folders and settings record (nothing else under ``root``),
    refusing while another process writes a shard."""
    locks = []
    trash = os.path.join(root, f".trash-{secrets.token_hex(6)}")
    try:
        for shard_dir in _shard_dirs(root):
            locks.append(_ShardLock(shard_dir))
        os.mkdir(trash)
        for path in _shard_dirs(root) + [os.path.join(root, SETTINGS_FILE)]:
            if os.path.exists(path):
                os.rename(path, os.path.join(trash, os.path.basename(path)))
    finally:
        for lock in locks:
            lock.release()
    shutil.rmtree(trash, ignore_errors=True)


def _check_settings(root: str, settings: dict, overwrite: bool) -> None:
    """Records ``settings`` in ``root/settings.json`` or checks them against the record; with
    ``overwrite``, a cache made with other settings (or without a record) is deleted first."""
    settings = _normalized(settings)
    path = os.path.join(root, SETTINGS_FILE)
    for _ in range(3):
        if os.path.exists(path):
            with open(path) as f:
                recorded = json.load(f)
            if recorded == settings:
                return
            if not overwrite:
                raise CacheSettingsError(
                    f"the proposal cache at {root} was made with other settings "
                    f"({'; '.join(_differences(recorded, settings))}); use another --out "
                    "(out_dir), or --overwrite (overwrite=True) to delete it and start afresh"
                )
            logger.warning("deleting the proposal cache at %s (other settings)", root)
            _wipe(root)
        elif any(_chunk_dirs(d) for d in _shard_dirs(root)):
            if not overwrite:
                raise CacheSettingsError(
                    f"the proposal cache at {root} holds proposals but no record of the "
                    "backend and filter they were made with (written by an older d2ext or a "
                    "converter); use another --out (out_dir), or --overwrite (overwrite=True) "
                    "to delete it and start afresh"
                )
            logger.warning("deleting the proposal cache at %s (no settings record)", root)
            _wipe(root)
        # create the record only if nobody else did in the meantime (link fails if it exists)
        tmp = os.path.join(root, f".{SETTINGS_FILE}.{secrets.token_hex(6)}.tmp")
        atomic_write_bytes(tmp, json.dumps(settings, indent=1, sort_keys=True).encode())
        try:
            os.link(tmp, path)
            return
        except FileExistsError:
            continue  # another shard recorded its settings first: compare with those
        except OSError:  # a file system without hard links: last writer wins
            os.replace(tmp, path)
            return
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise CacheSettingsError(f"could not record the settings of the proposal cache at {root}")


class ProposalWriter:
    """Appends images to one shard, a chunk at a time.

    Holds the shard's lock from construction to :meth:`close` (also a context manager, which
    flushes and closes).

    Args:
        root: the cache folder.
        shard, num_shards: which shard this process writes.
        chunk_size: images per chunk (the most a kill can lose).
        settings: what made the proposals (backend, filter, parameters; JSON-serialisable),
            recorded in ``root/settings.json``. A cache recorded with other settings, or
            holding chunks without a record, raises :class:`CacheSettingsError`. None: no
            record and no check (converters).
        overwrite: with ``settings``, delete a cache made with other settings (or without a
            record) instead of raising; a cache with the same settings is kept and resumed.

    Raises:
        CacheLockedError: another live process writes this shard.
        CacheSettingsError: see ``settings``.
    """

    def __init__(
        self,
        root: str,
        shard: int = 0,
        num_shards: int = 1,
        chunk_size: int = 256,
        settings: dict | None = None,
        overwrite: bool = False,
    ):
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.root = root
        self.dir = os.path.join(root, shard_dirname(shard, num_shards))
        self.chunk_size = chunk_size
        os.makedirs(root, exist_ok=True)
        if settings is not None:
            box_convention(settings)  # a recorded convention must be a known one
            _check_settings(root, settings, overwrite)
        os.makedirs(self.dir, exist_ok=True)
        self._lock = _ShardLock(self.dir)
        try:
            for name in os.listdir(self.dir):  # partial chunks of a killed writer
                if name.startswith(_TMP_PREFIX):
                    shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)
            self._stored: set[str] = set()  # keys with boxes in this shard's chunks
            self._failed_before: dict[str, str] = {}
            _scan_shard(self.dir, self._stored, self._failed_before)
        except BaseException:
            self._lock.release()
            raise
        self._added: set[str] = set()  # keys given to this writer
        self._pending: list[tuple[str, tuple[int, int], np.ndarray]] = []
        self._failed: dict[str, str] = {}
        self._empty: dict[str, str] = {}
        chunks = _chunk_dirs(self.dir)
        self._next = int(_CHUNK.match(os.path.basename(chunks[-1])).group(1)) + 1 if chunks else 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Flushes the pending images and releases the shard's lock."""
        try:
            self.flush()
        finally:
            self._lock.release()

    def done_keys(self) -> set[str]:
        """Keys already stored (boxes, empty or failed) in this shard's complete chunks."""
        done: set[str] = set()
        for chunk in _chunk_dirs(self.dir):
            done.update(np.load(os.path.join(chunk, "keys.npy")).tolist())
            done.update(_read_chunk_meta(chunk)["failed"])
        return done

    def _claim(self, key: str) -> None:
        if self._lock._fd is None:
            raise ValueError(f"the writer of {self.dir} is closed")
        if key in self._added:
            raise DuplicateKeyError(f"image key {key!r} was given twice to this writer")
        if key in self._stored:
            raise DuplicateKeyError(f"image key {key!r} is already stored in {self.dir}")
        self._added.add(key)

    def add(self, key: str, image_size: tuple[int, int], boxes_xyxy: np.ndarray) -> None:
        """One image's boxes ([N, 4] XYXY absolute pixels; N may be 0).

        Raises:
            DuplicateKeyError: the key was given before, or the shard holds it with boxes.
        """
        key = str(key)
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{key}: boxes contain NaN or Inf")
        self._claim(key)
        self._pending.append((key, (int(image_size[0]), int(image_size[1])), boxes))
        if len(boxes) == 0:
            self._empty[key] = "no proposal left"
        self._maybe_flush()

    def add_failed(self, key: str, reason: str) -> None:
        """An image that could not be processed, recorded with its reason (skipped by reruns
        unless they retry failures).

        Raises:
            DuplicateKeyError: the key was given before, or the shard holds it with boxes.
        """
        key = str(key)
        self._claim(key)
        self._failed[key] = reason
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
        tmp = os.path.join(self.dir, _TMP_PREFIX + secrets.token_hex(6))
        try:
            os.mkdir(tmp)  # the user's umask (mkdtemp would make it 0700)
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
        self._stored.update(keys.tolist())
        self._pending, self._failed, self._empty = [], {}, {}


class ProposalCache:
    """Read side: every complete chunk under ``root``, memory-mapped.

    ``cache[key]`` -> float32 [N, 4] XYXY boxes (a copy); ``cache.size(key)`` -> (H, W);
    ``cache.failed`` / ``cache.empty`` -> {key: reason}; ``cache.settings`` -> the recorded
    backend, filter and parameters (None for a cache written without them);
    ``cache.box_convention`` -> how its boxes end (:func:`box_convention`).

    Raises:
        FileNotFoundError: no folder at ``root``.
        DuplicateKeyError: a key is stored with boxes twice (a cache written with non-unique
            keys, or shards of different ``num_shards`` in one folder).
    """

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"no proposal cache at {root!r}")
        self._chunks: list[dict[str, np.ndarray]] = []
        self._where: dict[str, tuple[int, int]] = {}
        self.failed: dict[str, str] = {}
        self.empty: dict[str, str] = {}
        settings_path = os.path.join(root, SETTINGS_FILE)
        self.settings = None
        if os.path.exists(settings_path):
            with open(settings_path) as f:
                self.settings = json.load(f)
        self.box_convention = box_convention(self.settings)
        chunk_names = []
        for shard_dir in _shard_dirs(root):
            for chunk in _chunk_dirs(shard_dir):
                arrays = {
                    name: np.load(os.path.join(chunk, f"{name}.npy"), mmap_mode="r")
                    for name in _ARRAYS
                }
                meta = _read_chunk_meta(chunk)
                index = len(self._chunks)
                self._chunks.append(arrays)
                chunk_names.append(chunk)
                for row, key in enumerate(arrays["keys"].tolist()):
                    if key in self._where:
                        first, first_row = self._where[key]
                        raise DuplicateKeyError(
                            f"proposal cache {root}: image key {key!r} is stored twice "
                            f"({chunk_names[first]} row {first_row}, {chunk} row {row}); the "
                            "cache was written with non-unique keys or holds shards of "
                            "different --shard i/N splits: regenerate it"
                        )
                    self._where[key] = (index, row)
                self.failed.update(meta["failed"])
                self.empty.update(meta["empty"])
        for key in self._where:
            self.failed.pop(key, None)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key) -> bool:
        return str(key) in self._where

    def keys(self):
        """
        Returns:
            the keys of the stored images (with 0 boxes or more; failed images are not keys).
        """
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
        """
        Args:
            key: an image key.

        Returns:
            tuple[int, int]: the (H, W) the image's proposals were made on.

        Raises:
            KeyError: the image has no entry (with the reason when it failed).
        """
        chunk, row = self._lookup(key)
        h, w = chunk["sizes"][row]
        return int(h), int(w)
