"""Training hooks shared by every recipe."""

import torch
from detectron2.engine import HookBase

__all__ = ["GradientClipHook"]


class GradientClipHook(HookBase):
    """Clips the global L2 norm of all gradients after backward, before the optimizer step.

    Under :class:`AMPTrainer` the gradients are unscaled first so the bound applies to the
    true gradients.
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0):
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self.norm_type = norm_type

    def after_backward(self):
        optimizer = self.trainer.optimizer
        scaler = getattr(self.trainer, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, self.norm_type)
        self.trainer.storage.put_scalar("grad_norm", float(norm), smoothing_hint=True)
