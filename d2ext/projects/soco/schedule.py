"""SoCo's learning-rate multiplier (hologerry/SoCo ``contrast/lr_scheduler.py``)."""

from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from d2ext.solver.lr_schedules import _warmup_length

__all__ = ["warmup_rescaled_cosine"]


def warmup_rescaled_cosine(
    max_iter: int, warmup_iter: int, warmup_factor: float = 0.01, end_value: float = 0.0
) -> WarmupParamScheduler:
    """Linear warmup from ``warmup_factor`` to 1 over ``warmup_iter`` iterations, then a cosine
    from 1 to ``end_value`` over the remaining ``max_iter - warmup_iter`` iterations (SoCo:
    warmup from lr / 100 over 10 epochs, cosine over the other epochs).

    Args:
        max_iter: iterations of the run.
        warmup_iter: warmup iterations (capped at ``max_iter``).
        warmup_factor: the multiplier at iteration 0.
        end_value: the multiplier at ``max_iter``.

    Returns:
        a multiplier of the fraction of the run done, for detectron2's ``LRMultiplier``.
    """
    return WarmupParamScheduler(
        CosineParamScheduler(start_value=1.0, end_value=end_value),
        warmup_factor=warmup_factor,
        warmup_length=_warmup_length(max_iter, warmup_iter),
        rescale_interval=True,
    )
