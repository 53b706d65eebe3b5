"""Model parts shared by two or more papers."""

from .momentum import (
    MomentumSchedule,
    cosine_momentum,
    make_target,
    momentum_update,
)
from .poolers import ScaleAwareROIPooler

__all__ = [
    "MomentumSchedule",
    "ScaleAwareROIPooler",
    "cosine_momentum",
    "make_target",
    "momentum_update",
]
