"""SoCo (Wei et al., NeurIPS 2021): object-level contrastive pretraining of the whole detector."""

from .mapper import SoCoDatasetMapper, byol_colour_augmentation
from .modeling import MLP, SOCO_TO_DETECTRON2, SOCO_VIEW_PAIRS, SoCo, byol_loss

__all__ = [
    "MLP",
    "SOCO_TO_DETECTRON2",
    "SOCO_VIEW_PAIRS",
    "SoCo",
    "SoCoDatasetMapper",
    "byol_colour_augmentation",
    "byol_loss",
]
