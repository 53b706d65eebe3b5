"""Small distributed helpers."""

from __future__ import annotations

import torch
from detectron2.utils import comm

__all__ = ["mean_over_workers"]


def mean_over_workers(value: float, device: torch.device | str = "cpu") -> float:
    """The mean of a per-worker number over all workers (the value itself when not
    distributed): loss normalisers such as the number of positives, as the authors compute
    them."""
    t = torch.as_tensor([float(value)], dtype=torch.float32, device=device)
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(t)
        t = t / comm.get_world_size()
    return float(t.item())
