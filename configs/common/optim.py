"""Optimizers: detectron2's SGD and AdamW blocks (``model`` is filled in by the trainer)."""

from detectron2.model_zoo import get_config

_optim = get_config("common/optim.py")
SGD = _optim.SGD
AdamW = _optim.AdamW
