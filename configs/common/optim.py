"""Optimizers: detectron2's SGD and AdamW blocks, LARS, and the DETR family's AdamW (``model``
is filled in by the trainer)."""

import torch
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver.build import get_default_optimizer_params

from d2ext.solver import LARS as _LARS
from d2ext.solver import PrefixLRFactor, lars_param_groups, with_gradient_clipping

_optim = get_config("common/optim.py")
SGD = _optim.SGD
AdamW = _optim.AdamW
# SoCo's optimiser: base lr 1.0 x batch / 256, wd 1e-5, biases and norms excluded.
LARS = L(_LARS)(
    params=L(lars_param_groups)(model=None, weight_decay="${..weight_decay}"),
    lr=1.0,
    momentum=0.9,
    weight_decay=1e-5,
    trust_coefficient=0.001,
)
# Deformable DETR / Co-DETR authors' optimiser: AdamW 2e-4, wd 1e-4 on every parameter,
# lr x0.1 for the backbone and every deformable attention's sampling_offsets (their
# custom_keys; their third key, reference_points, names a layer that only the one-stage model
# has, and d2ext's two-stage transformer has no such parameter), gradients clipped to a
# full-model L2 norm of 0.1 in step().
DETRAdamW = L(with_gradient_clipping)(
    optimizer=torch.optim.AdamW,
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}",
        weight_decay_norm=None,  # the authors decay every parameter
        lr_factor_func=L(PrefixLRFactor)(
            prefixes="backbone.", factor=0.1, contains="sampling_offsets"
        ),
    ),
    lr=2e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
    clip_type="full_model",
    clip_value=0.1,
)
