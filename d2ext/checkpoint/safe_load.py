"""Checkpoint loading that never runs code from the file.

A pickle can name any importable callable and have the loader call it, so an untrusted
checkpoint loaded with ``pickle.load`` or ``torch.load(weights_only=False)`` can run arbitrary
code. :func:`load_checkpoint` instead reads

- PyTorch files (``.pth``, ``.pt``, ``.pyth``, anything not ``.pkl``) with
  ``torch.load(weights_only=True)``, allowing in addition only :data:`TORCH_EXTRA_GLOBALS`
  (``argparse.Namespace``, as in MAE's released checkpoints, and numpy arrays, scalars and
  dtypes);
- detectron2 / Detectron1 ``.pkl`` files with :class:`RestrictedUnpickler`, which resolves only
  numpy arrays, dtypes and scalars, ``collections.OrderedDict`` and a few builtin containers
  (:data:`PKL_ALLOWED_GLOBALS`).

Anything else in the file raises :class:`UnsafeCheckpointError` naming the file and the switch
that loads it anyway (``unsafe=True``: plain ``torch.load(weights_only=False)`` /
``pickle.load``), for files the user trusts.
"""

import _compat_pickle
import argparse
import collections
import logging
import os
import pickle
import re
from typing import Any

import numpy as np
import torch

__all__ = [
    "PKL_ALLOWED_GLOBALS",
    "RestrictedUnpickler",
    "TORCH_EXTRA_GLOBALS",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "load_pkl",
]

logger = logging.getLogger(__name__)

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

# (module, name) as written in a pickle -> the object it resolves to. Both numpy spellings:
# numpy 1.x writes numpy.core.*, numpy 2 writes numpy._core.*.
_NUMPY_GLOBALS = {}
for _mod in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _NUMPY_GLOBALS[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar
    # protocol 5 writes contiguous arrays as _frombuffer(buffer, dtype, shape, order)
    _NUMPY_GLOBALS[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer
_NUMPY_GLOBALS[("numpy", "ndarray")] = np.ndarray
_NUMPY_GLOBALS[("numpy", "dtype")] = np.dtype

PKL_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_NUMPY_GLOBALS,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    # protocol <= 2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1")
    ("_codecs", "encode"): __import__("_codecs").encode,
}
"""What a ``.pkl`` checkpoint may reference: (module, name) -> object."""

TORCH_EXTRA_GLOBALS: list = [
    argparse.Namespace,  # MAE's full checkpoints keep the training arguments under "args"
    np.ndarray,
    np.dtype,
    *[(obj, f"{mod}.{name}") for (mod, name), obj in _NUMPY_GLOBALS.items() if "core" in mod],
    # dtype classes (numpy >= 1.25 pickles a dtype's class in some paths)
    *[
        getattr(np.dtypes, n)
        for n in sorted(dir(getattr(np, "dtypes", object)))
        if n.endswith("DType") and isinstance(getattr(np.dtypes, n), type)
    ],
]
"""What ``torch.load(weights_only=True)`` additionally accepts (beyond tensors, containers and
primitives, which it always accepts)."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references something a safe load does not construct."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only :data:`PKL_ALLOWED_GLOBALS`.

    Args:
        file: a binary file object.
        path: the file's name, used in errors.
        switch: how the user loads the file anyway, used in errors.
    """

    def __init__(self, file, *, path: str = "<file>", switch: str = "--unsafe-load"):
        super().__init__(file, encoding="latin1")
        self._path = path
        self._switch = switch

    def find_class(self, module: str, name: str) -> Any:
        """
        Args:
            module, name: the global the pickle references (Python 2 names are mapped to Python 3).

        Returns:
            the allowed object of :data:`PKL_ALLOWED_GLOBALS`.

        Raises:
            UnsafeCheckpointError: for any other global.
        """
        key = (module, name)
        # Python 2 pickles (Detectron1 / Caffe2 model zoo) use Python 2 module names
        key = _compat_pickle.NAME_MAPPING.get(key, key)
        key = (_compat_pickle.IMPORT_MAPPING.get(key[0], key[0]), key[1])
        if key in PKL_ALLOWED_GLOBALS:
            return PKL_ALLOWED_GLOBALS[key]
        detail = f"it references {module}.{name}"
        raise UnsafeCheckpointError(_refusal(self._path, detail, self._switch))

    def persistent_load(self, pid: Any) -> Any:
        """
        Raises:
            UnsafeCheckpointError: always; a safe pickle holds no persistent ids.
        """
        raise UnsafeCheckpointError(
            _refusal(self._path, f"it holds persistent id {pid!r}", self._switch)
        )


def _refusal(path: str, detail: str, switch: str) -> str:
    return (
        f"refusing to load checkpoint {path!r}: {detail}. A safe load constructs only tensors, "
        "numpy arrays and plain data (unpickling anything else could run code from the file). "
        f"If you trust this file, load it with {switch}."
    )


def load_pkl(path: str, *, unsafe: bool = False, switch: str = "--unsafe-load") -> Any:
    """Unpickles a ``.pkl`` checkpoint (``encoding="latin1"``, as detectron2 does).

    Args:
        path: the file.
        unsafe: plain ``pickle.load`` (only for files the user trusts).
        switch: named in the error as the way to load the file anyway.

    Returns:
        The unpickled object.

    Raises:
        UnsafeCheckpointError: the file references anything outside :data:`PKL_ALLOWED_GLOBALS`.
    """
    with open(path, "rb") as f:
        return _unpickle(f, path, unsafe, switch)


def _unpickle(f: Any, path: str, unsafe: bool, switch: str) -> Any:
    """:func:`load_pkl` on the open binary file ``f`` of ``path``."""
    if unsafe:
        logger.warning(f"Unpickling {path} without restrictions ({switch})")
        return pickle.load(f, encoding="latin1")
    return RestrictedUnpickler(f, path=path, switch=switch).load()


def _torch_reason(err: Exception) -> str:
    """The line of torch's weights-only error that says what was refused (its other paragraphs
    advise weights_only=False, which this module's switch replaces)."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", str(err)) if p.strip()]
    advice = ("Weights only load failed", "Check the documentation")
    keep = [p for p in paras if not p.startswith(advice)]
    reason = keep[0] if keep else (paras[-1] if paras else type(err).__name__)
    reason = reason.replace("WeightsUnpickler error:", "").split(" Please use")[0]
    return reason.strip().splitlines()[0].rstrip(".")


def load_checkpoint(
    path: str,
    *,
    unsafe: bool = False,
    switch: str = "--unsafe-load",
    map_location: Any = "cpu",
    progress: bool = False,
) -> Any:
    """Loads a checkpoint file without running code from it.

    Args:
        path: a local file; ``.pkl`` is read as a (detectron2 / Detectron1) pickle, anything
            else with ``torch.load``.
        unsafe: load with ``torch.load(weights_only=False)`` / ``pickle.load``: only for a file
            the user trusts.
        switch: the option that sets ``unsafe`` where the caller is used (``--unsafe-load`` for
            the tools, ``train.unsafe_load=True`` for training), named in errors.
        map_location: ``torch.load``'s ``map_location``.
        progress: show a progress bar (bytes read, rate, ETA) on stderr.

    Returns:
        The loaded object (usually a dict).

    Raises:
        UnsafeCheckpointError: the file holds objects a safe load does not construct.
        FileNotFoundError: no such file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} not found")
    if progress:
        with _ProgressReader(path) as f:
            return _load(f, path, unsafe, switch, map_location)
    return _load(path, path, unsafe, switch, map_location)


def _load(file: Any, path: str, unsafe: bool, switch: str, map_location: Any) -> Any:
    """:func:`load_checkpoint` on ``file`` (a path or a binary file object of ``path``)."""
    if path.endswith(".pkl"):
        if isinstance(file, str):
            return load_pkl(path, unsafe=unsafe, switch=switch)
        return _unpickle(file, path, unsafe, switch)
    if unsafe:
        logger.warning(f"Loading {path} with torch.load(weights_only=False) ({switch})")
        return torch.load(file, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(TORCH_EXTRA_GLOBALS):
            return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(_refusal(path, _torch_reason(e), switch)) from e


class _ProgressReader:
    """A binary file opened for reading whose reads advance a tqdm bar (bytes, rate, ETA on
    stderr); a context manager that closes both."""

    def __init__(self, path: str):
        from tqdm import tqdm

        self._file = open(path, "rb")  # noqa: SIM115 (closed in __exit__)
        self._bar = tqdm(
            total=os.path.getsize(path),
            desc=f"reading {os.path.basename(path)}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
        )

    def read(self, size: int = -1) -> bytes:
        """Reads like ``file.read`` and advances the bar by the bytes read."""
        data = self._file.read(size)
        self._bar.update(len(data))
        return data

    def readinto(self, buffer) -> int:
        """Reads like ``file.readinto`` and advances the bar by the bytes read."""
        n = self._file.readinto(buffer)
        self._bar.update(n or 0)
        return n

    def readline(self, size: int = -1) -> bytes:
        """Reads like ``file.readline`` and advances the bar by the bytes read."""
        data = self._file.readline(size)
        self._bar.update(len(data))
        return data

    def __getattr__(self, name: str) -> Any:  # seek, tell, peek, fileno, ...
        return getattr(self._file, name)

    def __enter__(self) -> "_ProgressReader":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
        self._file.close()
