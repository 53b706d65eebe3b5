"""Atomic file writes: a reader sees the old file or the complete new one, never a half."""

import os
import tempfile
from collections.abc import Callable
from typing import IO


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Calls ``write(f)`` on a temporary file beside ``path``, fsyncs it and renames it over
    ``path``. A crash at any point leaves ``path`` as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
