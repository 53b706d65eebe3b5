"""Atomic file writes: a reader sees the old file or the complete new one, never a half."""

import os
import re
import tempfile
from collections.abc import Callable
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "current_umask", "remove_stale_temporaries"]

# tempfile.mkstemp(prefix=".<name>.", suffix=".tmp") names: 8 random characters in the middle
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it back is not
    thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Calls ``write(f)`` on a temporary file beside ``path``, fsyncs it and renames it over
    ``path``. A crash at any point leaves ``path`` as it was (and at most a temporary
    ``.<name>.XXXXXXXX.tmp``, which :func:`remove_stale_temporaries` removes). The file gets
    the permissions of a plain ``open(path, "w")``: ``0o666`` less the umask."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp creates 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda f: f.write(data))


def remove_stale_temporaries(folder: str) -> list[str]:
    """Removes the temporaries :func:`atomic_write` leaves in ``folder`` when a process is
    killed mid-write (``.<name>.XXXXXXXX.tmp``; e.g. a partial ``.model_0004999.pth...tmp``).
    Call it only where no other process is writing into ``folder``.

    Returns:
        The removed paths.
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if _TEMP_NAME.match(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed.append(path)
    return removed
