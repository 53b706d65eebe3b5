"""The momentum (target) network of SoCo and AlignDet.

The target is a frozen copy of the online modules whose parameters follow an exponential moving
average of the online parameters, with the momentum raised from m0 to 1 on a cosine:

    m_k = 1 - (1 - m0) * (cos(pi * k / K) + 1) / 2            (BYOL, SoCo Sec. 3.3, AlignDet)

SoCo uses m0 = 0.99, AlignDet 0.996. Only parameters are averaged; buffers (BN statistics) are
the target's own. Parameters named in ``copy_keys`` (AlignDet: DETR query embeddings) are
copied instead of averaged. Every rank applies the same update to the same (all-reduced)
online parameters, so targets stay identical under DistributedDataParallel without
communication.
"""

import copy
import math
from collections.abc import Sequence

import torch
from detectron2.engine import HookBase
from torch import nn

__all__ = ["MomentumUpdateHook", "cosine_momentum", "make_target", "momentum_update"]


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


class MomentumUpdateHook(HookBase):
    """Updates a model's target network after every optimizer step with the cosine momentum.

    The model (unwrapped from DistributedDataParallel) must have a method
    ``momentum_update(momentum: float)``; the momentum at iteration k of a run of K iterations
    is :func:`cosine_momentum` (base_momentum, k + 1, K), as the authors step it after each
    update. The value goes to the event storage as ``momentum``.
    """

    def __init__(self, base_momentum: float):
        cosine_momentum(base_momentum, 0, 1)  # validates
        self.base_momentum = base_momentum

    def after_step(self):
        model = self.trainer.model
        model = model.module if hasattr(model, "module") else model
        m = cosine_momentum(self.base_momentum, self.trainer.iter + 1, self.trainer.max_iter)
        model.momentum_update(m)
        self.trainer.storage.put_scalar("momentum", m, smoothing_hint=False)
