"""SoCo (Wei et al., NeurIPS 2021): object-level contrastive pretraining of the whole detector."""

from .hooks import PreciseBN
from .mapper import (
    SOCO_BOX_LIST_VIEWS,
    SoCoDatasetMapper,
    byol_colour_augmentation,
    cutout_in_boxes,
)
from .modeling import MLP, SOCO_TO_DETECTRON2, SOCO_VIEW_PAIRS, SoCo, byol_loss, zero_init_last_norm
from .schedule import warmup_rescaled_cosine

__all__ = [
    "MLP",
    "SOCO_BOX_LIST_VIEWS",
    "SOCO_TO_DETECTRON2",
    "SOCO_VIEW_PAIRS",
    "PreciseBN",
    "SoCo",
    "SoCoDatasetMapper",
    "byol_colour_augmentation",
    "byol_loss",
    "cutout_in_boxes",
    "warmup_rescaled_cosine",
    "zero_init_last_norm",
]
