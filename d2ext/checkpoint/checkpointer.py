"""A DetectionCheckpointer whose files survive a kill, whose loads run no code from the file and
whose load errors say what to do."""

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from d2ext.utils.io import atomic_write, atomic_write_bytes

from .safe_load import UnsafeCheckpointError, load_checkpoint

__all__ = ["D2extCheckpointer", "PartialLoadError"]


class PartialLoadError(RuntimeError):
    """A checkpoint filled too small a share of the model's parameters."""


def _examples(keys, n: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:n])
    return f"{len(keys)}" + (f" (e.g. {shown}{', ...' if len(keys) > n else ''})" if keys else "")


class D2extCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with atomic writes, safe loading and clear load errors.

    ``save`` writes ``<name>.pth`` and then ``last_checkpoint`` through a temporary file and a
    rename, so a job killed at any moment leaves ``last_checkpoint`` naming a complete file;
    ``--resume`` then continues from it. A missing or unreadable checkpoint raises an error
    naming the file and the way out instead of an unpickling traceback.

    Every file is read by :func:`d2ext.checkpoint.load_checkpoint`: ``.pkl`` files (detectron2
    and Detectron1 model zoo) through a restricted unpickler that builds only numpy arrays and
    plain data, everything else with ``torch.load(weights_only=True)``; then, as in
    :class:`DetectionCheckpointer`, ``.pkl`` weights are matched by name heuristics. A file
    holding anything else raises :class:`~d2ext.checkpoint.UnsafeCheckpointError`.

    Args:
        model, save_dir, save_to_disk, checkpointables: as :class:`DetectionCheckpointer`.
        unsafe_load: unpickle files without restrictions (only for files the user trusts).
        unsafe_switch: how the user sets ``unsafe_load``, named in the refusal error.
        min_loaded_fraction: when a load fills fewer than this share of the model's parameter
            values, raise :class:`PartialLoadError` with the key report before anything else
            is restored. 0 disables the check.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        save_to_disk=None,
        unsafe_load: bool = False,
        unsafe_switch: str = "train.unsafe_load=True",
        min_loaded_fraction: float = 0.0,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        if not 0.0 <= min_loaded_fraction <= 1.0:
            raise ValueError(f"min_loaded_fraction must be in [0, 1], got {min_loaded_fraction}")
        self.unsafe_load = unsafe_load
        self.unsafe_switch = unsafe_switch
        self.min_loaded_fraction = min_loaded_fraction
        self._loading = None

    def save(self, name: str, **kwargs: Any) -> None:
        """Writes the model's and every checkpointable's state dicts (plus ``kwargs``) to
        ``<save_dir>/<name>.pth`` atomically, then tags it as the last checkpoint. Does nothing
        without ``save_dir`` or when ``save_to_disk`` is false.

        Args:
            name: the file name without ``.pth``.
            kwargs: extra entries stored in the file.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Writes ``last_checkpoint`` in ``save_dir`` atomically.

        Args:
            last_filename_basename: the file name it holds.
        """
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write_bytes(path, last_filename_basename.encode())

    def get_checkpoint_file(self) -> str:
        """
        Returns:
            str: the path ``last_checkpoint`` names ("" when there is none).

        Raises:
            FileNotFoundError: ``last_checkpoint`` names a file that does not exist.
        """
        path = super().get_checkpoint_file()
        if path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} names {path}, which does not "
                "exist. Point last_checkpoint at an existing model_*.pth in that folder, or "
                "delete it to start from train.init_checkpoint."
            )
        return path

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        """:meth:`DetectionCheckpointer.load` through the safe loader.

        Args:
            path: a local checkpoint path or a URL ("" or None: nothing is loaded).
            args, kwargs: as :meth:`DetectionCheckpointer.load`.

        Returns:
            dict: the checkpoint's entries that were not loaded into the model or a checkpointable.

        Raises:
            FileNotFoundError: a local ``path`` that is not a file.
        """
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"checkpoint {path!r} not found. Check train.init_checkpoint (a local path; "
                "nothing is downloaded at run time)."
            )
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _safe_load(self, filename: str) -> Any:
        return load_checkpoint(filename, unsafe=self.unsafe_load, switch=self.unsafe_switch)

    def _torch_load(self, f: str) -> Any:
        return self._safe_load(f)

    def _load_file(self, filename: str) -> dict[str, Any]:
        try:
            if filename.endswith(".pkl"):
                return self._from_pkl(self._safe_load(filename))
            if filename.endswith(".pyth"):
                return self._from_pyth(self._safe_load(filename), filename)
            return super()._load_file(filename)  # .pth: through _torch_load above
        except UnsafeCheckpointError:
            raise
        except Exception as e:  # torch.load / pickle raise many types for a damaged file
            raise RuntimeError(
                f"checkpoint {filename!r} is unreadable or truncated ({type(e).__name__}: {e}). "
                "If it is the last periodic checkpoint of an interrupted job, point "
                "last_checkpoint in its folder at an earlier model_*.pth (or delete the file) "
                "and resume again."
            ) from e

    def _from_pkl(self, data: Any) -> dict[str, Any]:
        # what DetectionCheckpointer._load_file does after pickle.load
        if "model" in data and "__author__" in data:  # Detectron2 model zoo format
            self.logger.info("Reading a file from '{}'".format(data["__author__"]))
            return data
        # Caffe2 / Detectron1 model zoo: detection models keep weights under "blobs"
        if "blobs" in data:
            data = data["blobs"]
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    @staticmethod
    def _from_pyth(data: Any, filename: str) -> dict[str, Any]:
        # what DetectionCheckpointer._load_file does for pycls checkpoints
        if not isinstance(data, dict) or "model_state" not in data:
            raise ValueError(f"{filename}: pycls checkpoints must contain 'model_state'")
        state = {
            k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")
        }
        return {"model": state, "__author__": "pycls", "matching_heuristics": True}

    def _load_model(self, checkpoint: Any):
        incompatible = super()._load_model(checkpoint)
        if self.min_loaded_fraction > 0 and incompatible is not None:
            self._check_loaded_fraction(incompatible)
        return incompatible

    def _check_loaded_fraction(self, incompatible) -> None:
        params = dict(self.model.named_parameters())
        total = sum(p.numel() for p in params.values())
        missing = set(incompatible.missing_keys)
        loaded = [k for k in params if k not in missing]
        share = sum(params[k].numel() for k in loaded) / total if total else 1.0
        if share >= self.min_loaded_fraction:
            return
        shapes = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in incompatible.incorrect_shapes]
        missing_params = [k for k in params if k in missing]
        raise PartialLoadError(
            f"checkpoint {self._loading!r} filled {share:.1%} of the model's parameter values "
            f"(minimum {self.min_loaded_fraction:.0%}): is it a checkpoint of another model?\n"
            f"  loaded parameters: {_examples(loaded)}\n"
            f"  missing parameters: {_examples(missing_params)}\n"
            f"  unexpected keys: {_examples(incompatible.unexpected_keys)}\n"
            f"  shape mismatch: {_examples(shapes)}\n"
            "If the partial load is intended (e.g. a backbone-only initialisation), set "
            "train.allow_partial_init=True (or lower train.min_init_fraction)."
        )
