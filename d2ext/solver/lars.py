"""LARS (You et al., 2017) as SoCo trains with it (inherited from BYOL / PixPro).

For each parameter p with gradient g, in a group with learning rate lr, momentum mu, weight
decay wd and trust coefficient eta:

    d = g + wd * p
    d = d * (eta * ||p|| / ||d||)     if ||p|| > 0 and ||d|| > 0, and the group is not excluded
    buf = mu * buf + d
    p = p - lr * buf

Biases and normalisation parameters are conventionally excluded from both weight decay and
the trust ratio: :func:`lars_param_groups` builds such groups from a model.
"""

import torch
from torch import nn

__all__ = ["LARS", "lars_param_groups"]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with heavy-ball momentum.

    Args:
        params: parameters or param groups; a group with ``lars_exclude=True`` skips the
            trust ratio.
        lr: base learning rate (SoCo: 1.0 x batch / 256).
        momentum: heavy-ball momentum.
        weight_decay: L2 weight decay added to the gradient (SoCo: 1e-5).
        trust_coefficient: eta, scales the layer-wise trust ratio.
    """

    def __init__(self, params, lr: float, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001):
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(
                f"invalid LARS settings: lr={lr}, momentum={momentum}, "
                f"weight_decay={weight_decay}, trust_coefficient={trust_coefficient}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One LARS update of every parameter with a gradient (see the module docstring).

        Args:
            closure: optional; re-evaluates the model and returns the loss.

        Returns:
            the closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["weight_decay"] != 0:
                    d = d.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    p_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    ratio = group["trust_coefficient"] * p_norm / d_norm
                    one = torch.ones_like(p_norm)
                    q = torch.where((p_norm > 0) & (d_norm > 0), ratio, one)
                    d = d.mul(q)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, adapted) and 1-D parameters such as biases and norm
    scales (no weight decay, no trust ratio), as in SoCo / BYOL."""
    decay, exclude = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (exclude if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": exclude, "weight_decay": 0.0, "lars_exclude": True},
    ]
