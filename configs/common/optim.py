"""Optimizers: detectron2's SGD and AdamW blocks, and LARS (``model`` is filled in by the
trainer)."""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2ext.solver import LARS as _LARS
from d2ext.solver import lars_param_groups

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
