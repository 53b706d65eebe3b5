"""A DetectionCheckpointer whose files survive a kill and whose load errors say what to do."""

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from d2ext.utils.io import atomic_write, atomic_write_bytes

__all__ = ["D2extCheckpointer"]


class D2extCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with atomic writes and clear load errors.

    ``save`` writes ``<name>.pth`` and then ``last_checkpoint`` through a temporary file and a
    rename, so a job killed at any moment leaves ``last_checkpoint`` naming a complete file;
    ``--resume`` then continues from it. A missing or unreadable checkpoint raises an error
    naming the file and the way out instead of an unpickling traceback.
    """

    def save(self, name: str, **kwargs: Any) -> None:
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
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write_bytes(path, last_filename_basename.encode())

    def get_checkpoint_file(self) -> str:
        path = super().get_checkpoint_file()
        if path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} names {path}, which does not "
                "exist. Point last_checkpoint at an existing model_*.pth in that folder, or "
                "delete it to start from train.init_checkpoint."
            )
        return path

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"checkpoint {path!r} not found. Check train.init_checkpoint (a local path; "
                "nothing is downloaded at run time)."
            )
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> dict[str, Any]:
        try:
            return super()._load_file(filename)
        except Exception as e:  # torch.load / pickle raise many types for a damaged file
            raise RuntimeError(
                f"checkpoint {filename!r} is unreadable or truncated ({type(e).__name__}: {e}). "
                "If it is the last periodic checkpoint of an interrupted job, point "
                "last_checkpoint in its folder at an earlier model_*.pth (or delete the file) "
                "and resume again."
            ) from e
