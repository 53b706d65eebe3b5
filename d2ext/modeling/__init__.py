"""Model parts shared by two or more papers."""

from .momentum import (
    MomentumSchedule,
    MomentumUpdateHook,
    cosine_momentum,
    make_target,
    momentum_update,
)
from .poolers import ScaleAwareROIPooler

__all__ = [
    "MomentumSchedule",
    "MomentumUpdateHook",
    "ScaleAwareROIPooler",
    "cosine_momentum",
    "make_target",
    "momentum_update",
]
