"""Optimizers and LR schedules usable by any config."""

from .clip import with_gradient_clipping
from .lars import LARS, lars_param_groups
from .lr_factor import PrefixLRFactor
from .lr_schedules import StepDecayScheduler, warmup_cosine, warmup_multistep

__all__ = [
    "LARS",
    "PrefixLRFactor",
    "StepDecayScheduler",
    "lars_param_groups",
    "warmup_cosine",
    "warmup_multistep",
    "with_gradient_clipping",
]
