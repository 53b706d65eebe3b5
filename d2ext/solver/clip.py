"""Gradient clipping inside ``optimizer.step()``, through detectron2's own optimizer wrapper.

detectron2 clips gradients by giving the optimizer a subclass whose ``step`` clips first
(``detectron2.solver.build.maybe_add_gradient_clipping``, driven by a yacs config). This module
exposes the same mechanism to LazyConfig: clipping is a property of ``cfg.optimizer`` and so
happens in any training loop that calls ``optimizer.step()``, d2ext's or a user's
(detectron2's ``tools/lazyconfig_train_net.py``). Under :class:`AMPTrainer` the grad scaler
unscales the gradients before it calls ``step``, so the bound applies to the true gradients.

The two detectron2 helpers it builds on are private; this is the only place d2ext imports them.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.utils.registry import locate

from d2ext.utils.d2_compat import create_gradient_clipper as _create_gradient_clipper
from d2ext.utils.d2_compat import (
    generate_optimizer_class_with_gradient_clipping as _generate_optimizer_class_with_gradient_clipping,  # noqa: E501
)

__all__ = ["CLIP_TYPES", "with_gradient_clipping"]

# "full_model": one L2 (norm_type) norm over every gradient of the optimizer, as DETR, Co-DETR
# and Mask2Former clip; "norm" / "value": detectron2's per-parameter clipping
# (SOLVER.CLIP_GRADIENTS.CLIP_TYPE).
CLIP_TYPES = ("full_model", "norm", "value")


def _full_model_clipper(clip_value: float, norm_type: float):
    def clip(params):
        torch.nn.utils.clip_grad_norm_(
            [p for p in params if p.grad is not None], clip_value, norm_type
        )

    return clip


def with_gradient_clipping(
    optimizer: torch.optim.Optimizer | type | str,
    *,
    clip_value: float,
    clip_type: str = "full_model",
    norm_type: float = 2.0,
    **optimizer_kwargs,
) -> torch.optim.Optimizer:
    """An optimizer whose ``step()`` clips the gradients before updating.

    Made with detectron2's ``_generate_optimizer_class_with_gradient_clipping`` (the class
    behind ``maybe_add_gradient_clipping``): a subclass of the optimizer's class whose ``step``
    clips, then calls the original ``step``. An instance gets that class in place, as
    ``maybe_add_gradient_clipping`` does; a class (or its dotted name) is first instantiated
    with ``optimizer_kwargs``. The second form keeps ``params`` at the top of a LazyConfig
    node, so a loop that sets ``cfg.optimizer.params.model = model`` still works::

        optimizer = L(with_gradient_clipping)(
            optimizer=torch.optim.AdamW,
            params=L(get_default_optimizer_params)(),
            lr=2e-4,
            weight_decay=1e-4,
            clip_value=0.1,  # Co-DETR: full-model L2 norm at most 0.1
        )

    Args:
        optimizer: a ``torch.optim.Optimizer``, or an Optimizer subclass / its dotted name.
        clip_value: the bound: on the total norm ("full_model"), each parameter's gradient norm
            ("norm"), or each gradient element's absolute value ("value").
        clip_type: one of :data:`CLIP_TYPES`.
        norm_type: the p of the norm (2.0: L2) for "full_model" and "norm".
        optimizer_kwargs: the optimizer's arguments when ``optimizer`` is a class.

    Returns:
        The optimizer, now an instance of the clipping subclass; its ``gradient_clipping``
        attribute holds the settings.
    """
    if clip_type not in CLIP_TYPES:
        raise ValueError(f"clip_type must be one of {CLIP_TYPES}, got {clip_type!r}")
    if not clip_value > 0:
        raise ValueError(f"clip_value must be positive, got {clip_value}")
    if isinstance(optimizer, str):
        name, optimizer = optimizer, locate(optimizer)
        if optimizer is None:
            raise ValueError(f"cannot find optimizer class {name!r}")
    if isinstance(optimizer, type):
        if not issubclass(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{optimizer} is not a torch.optim.Optimizer subclass")
        optimizer = optimizer(**optimizer_kwargs)
    elif optimizer_kwargs:
        raise TypeError(
            f"optimizer arguments {sorted(optimizer_kwargs)} given with an optimizer instance"
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected an optimizer, got {type(optimizer).__name__}")
    if hasattr(optimizer, "gradient_clipping"):
        # the generated step calls super(type(self), self).step: a second wrap would recurse
        raise ValueError(f"the optimizer already clips gradients: {optimizer.gradient_clipping}")
    if clip_type == "full_model":
        clipper = {"global_clipper": _full_model_clipper(clip_value, norm_type)}
    else:
        settings = CfgNode(
            {"CLIP_TYPE": clip_type, "CLIP_VALUE": clip_value, "NORM_TYPE": norm_type}
        )
        per_param = _create_gradient_clipper(settings)

        def clip_one(p):  # a parameter without gradient (unused, frozen) has nothing to clip
            if p.grad is not None:
                per_param(p)

        clipper = {"per_param_clipper": clip_one}
    cls = _generate_optimizer_class_with_gradient_clipping(type(optimizer), **clipper)
    cls.gradient_clipping = {
        "clip_type": clip_type,
        "clip_value": clip_value,
        "norm_type": norm_type,
    }
    optimizer.__class__ = cls
    return optimizer
