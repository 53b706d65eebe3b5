"""The momentum (target) network of SoCo and AlignDet.

The target is a frozen copy of the online modules whose parameters follow an exponential moving
average of the online parameters, with the momentum raised from m0 to 1 on a cosine:

    m_k = 1 - (1 - m0) * (cos(pi * k / K) + 1) / 2            (BYOL, SoCo Sec. 3.3, AlignDet)

SoCo uses m0 = 0.99, AlignDet 0.996. Only parameters are averaged; buffers (BN statistics) are
the target's own. Parameters named in ``copy_keys`` (AlignDet: DETR query embeddings) are
copied instead of averaged.

The model steps the schedule itself (:class:`MomentumSchedule`): every forward in training mode
first applies the update that the authors apply after the previous optimizer step, so it
happens in any training loop (d2ext's or a user's detectron2 loop) without a hook. Every rank
runs the forward in lockstep and applies the same update to the same (all-reduced) online
parameters, so targets stay identical under DistributedDataParallel without communication.
"""

import copy
import math
from collections.abc import Sequence

import torch
from detectron2.utils.events import get_event_storage
from torch import nn

__all__ = [
    "MomentumSchedule",
    "cosine_momentum",
    "make_target",
    "momentum_update",
]


def cosine_momentum(base_momentum: float, step: int, total_steps: int) -> float:
    """m_k = 1 - (1 - m0) * (cos(pi * k / K) + 1) / 2: m0 at k = 0, 1 at k = K."""
    if not 0.0 <= base_momentum <= 1.0:
        raise ValueError(f"base momentum must be in [0, 1], got {base_momentum}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


def make_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` with gradients off: the target network at initialisation."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def momentum_update(
    online: nn.Module, target: nn.Module, momentum: float, copy_keys: Sequence[str] = ()
) -> None:
    """target = momentum * target + (1 - momentum) * online, parameter by parameter; parameters
    whose name contains one of ``copy_keys`` are copied.

    Raises:
        ValueError: when the two modules do not have the same parameter names and shapes.
    """
    online_params = dict(online.named_parameters())
    target_params = dict(target.named_parameters())
    if online_params.keys() != target_params.keys():
        missing = sorted(online_params.keys() ^ target_params.keys())[:5]
        raise ValueError(f"online and target networks differ in parameters, e.g. {missing}")
    for name, p_online in online_params.items():
        p_target = target_params[name]
        if p_target.shape != p_online.shape:
            raise ValueError(f"{name}: shape {tuple(p_online.shape)} vs {tuple(p_target.shape)}")
        if any(key in name for key in copy_keys):
            p_target.copy_(p_online)
        else:
            p_target.mul_(momentum).add_(p_online.detach(), alpha=1.0 - momentum)


class MomentumSchedule(nn.Module):
    """Steps a target network's EMA once per training iteration, from the model's forward.

    Call :meth:`step` at the start of every forward in training mode. Forward k (k = 0, 1, ...)
    first applies, for k > 0, target = m * target + (1 - m) * online with
    m = :func:`cosine_momentum` (base_momentum, k, total_steps): the update the authors apply
    right after optimizer step k - 1 (their momentum for the k-th update). The online
    parameters seen here are those that step produced, so the target that forward k uses is
    the same as with an update after each step. ``iteration`` (k) is a buffer: checkpoints
    carry it and a resumed run continues the schedule. The momentum of each update goes to the
    event storage as ``momentum``.

    The update that would follow the last step of a run is not applied (no forward follows it);
    the transferred weights are the online network's.

    Args:
        base_momentum: m0 (SoCo 0.99, AlignDet 0.996).
        total_steps: K, the run's iterations (configs: ``"${train.max_iter}"``); may be None for
            a model that never trains.
        copy_keys: parameter names copied rather than averaged (AlignDet's DETR queries).
    """

    def __init__(
        self, base_momentum: float, total_steps: int | None, copy_keys: Sequence[str] = ()
    ):
        super().__init__()
        cosine_momentum(base_momentum, 0, 1)  # validates
        if total_steps is not None and int(total_steps) <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.base_momentum = float(base_momentum)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.copy_keys = tuple(copy_keys)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def step(self, online: nn.Module, target: nn.Module) -> float | None:
        """Applies iteration k's update (none at k = 0) and advances k.

        Returns:
            The momentum used, or None at k = 0.
        """
        if self.total_steps is None:
            raise ValueError(
                "the momentum schedule needs total_steps (the run's iterations, in configs "
                '"${train.max_iter}") to train'
            )
        k = int(self.iteration)
        m = None
        if k > 0:
            m = cosine_momentum(self.base_momentum, k, self.total_steps)
            momentum_update(online, target, m, self.copy_keys)
            get_event_storage().put_scalar("momentum", m, smoothing_hint=False)
        self.iteration += 1
        return m

    def extra_repr(self) -> str:
        """
        Returns:
            str: ``base_momentum``, ``total_steps`` and ``copy_keys``, for the module's repr.
        """
        return (
            f"base_momentum={self.base_momentum}, total_steps={self.total_steps}, "
            f"copy_keys={self.copy_keys}"
        )
