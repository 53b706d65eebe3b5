"""imTED's optimizer parameter groups (its ``LayerDecayOptimizerConstructor``) for
detectron2's optimizer LazyCalls."""

import torch
from detectron2.solver.build import reduce_param_groups

__all__ = ["imted_param_groups", "no_weight_decay"]


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """imTED's rule (MAE's plus biases): no weight decay for every 1-d parameter (biases, every
    norm's weight and bias, the modulator's per-channel weight) and for names ending in
    ``.bias``, ``_token`` or ``pos_embed``."""
    return (
        param.ndim == 1
        or name.endswith(".bias")
        or name.endswith("_token")
        or name.endswith("pos_embed")
    )


def imted_param_groups(
    model: torch.nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    lr_factor_func=None,
    exclude: tuple[str, ...] = (),
) -> list[dict]:
    """Parameter groups as imTED's optimizer constructors build them: weight decay
    ``weight_decay`` except where :func:`no_weight_decay` says 0; lr ``base_lr`` times
    ``lr_factor_func(name)``; parameters with ``requires_grad=False`` and names starting
    with a prefix in ``exclude`` are left out.

    Args:
        model: the detector (filled in by the trainer as ``optimizer.params.model``).
        base_lr: the optimizer's lr.
        weight_decay: the decay of the parameters the rule does not exempt.
        lr_factor_func: name -> lr factor (e.g. :class:`LayerDecay`), or None for 1.
        exclude: name prefixes kept out of the optimizer.

    Returns:
        the param groups for ``torch.optim`` (merged by detectron2's ``reduce_param_groups``).
    """
    if model is None:
        raise ValueError("imted_param_groups needs the model (set optimizer.params.model)")
    groups = []
    for name, p in model.named_parameters():
        if not p.requires_grad or name.startswith(tuple(exclude)):
            continue
        lr = base_lr * (lr_factor_func(name) if lr_factor_func is not None else 1.0)
        wd = 0.0 if no_weight_decay(name, p) else weight_decay
        groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    if not groups:
        raise ValueError("no trainable parameter left for the optimizer")
    return reduce_param_groups(groups)
