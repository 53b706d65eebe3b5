"""Optimizers and LR schedules usable by any config."""

from .lr_schedules import warmup_cosine, warmup_multistep

__all__ = ["warmup_cosine", "warmup_multistep"]
