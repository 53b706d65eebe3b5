"""LR multipliers built at instantiate time from the run length, so a config that says
``max_iter="${train.max_iter}"`` follows a command-line override of ``train.max_iter``."""

from collections.abc import Sequence

from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler, ParamScheduler

__all__ = ["StepDecayScheduler", "warmup_cosine", "warmup_multistep"]


class StepDecayScheduler(ParamScheduler):
    """gamma ** (number of milestones reached): fvcore's MultiStepParamScheduler without its
    requirement that the run be longer than the number of values, so a 1-iteration smoke run of
    a 90k-iteration recipe builds the same way."""

    def __init__(self, milestones: Sequence[int], num_updates: int, gamma: float = 0.1):
        self.milestones = sorted(int(m) for m in milestones)
        self.num_updates = num_updates
        self.gamma = gamma

    def __call__(self, where: float) -> float:
        it = where * self.num_updates
        return self.gamma ** sum(it >= m for m in self.milestones)


def _warmup_length(max_iter: int, warmup_iter: int) -> float:
    """Warmup as a fraction of the run; a warmup longer than the run covers all of it."""
    if max_iter <= 0:
        raise ValueError(f"max_iter must be positive, got {max_iter}")
    if warmup_iter < 0:
        raise ValueError(f"warmup_iter must be >= 0, got {warmup_iter}")
    return min(warmup_iter, max_iter) / max_iter


def warmup_multistep(
    max_iter: int,
    steps: Sequence[float] = (2 / 3, 8 / 9),
    warmup_iter: int = 1000,
    warmup_factor: float = 0.001,
    gamma: float = 0.1,
) -> WarmupParamScheduler:
    """Linear warmup over ``warmup_iter`` iterations, then decay by ``gamma`` at each fraction
    ``steps`` of ``max_iter`` (detectron2's COCO 1x: 90k, decays at 60k and 80k)."""
    return WarmupParamScheduler(
        StepDecayScheduler([int(f * max_iter) for f in steps], max_iter, gamma),
        warmup_factor=warmup_factor,
        warmup_length=_warmup_length(max_iter, warmup_iter),
    )


def warmup_cosine(
    max_iter: int, warmup_iter: int = 0, end_value: float = 0.0, warmup_factor: float = 0.001
) -> WarmupParamScheduler:
    """Linear warmup, then cosine decay from 1 to ``end_value`` at ``max_iter``."""
    return WarmupParamScheduler(
        CosineParamScheduler(start_value=1.0, end_value=end_value),
        warmup_factor=warmup_factor,
        warmup_length=_warmup_length(max_iter, warmup_iter),
    )
