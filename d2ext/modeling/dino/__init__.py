"""DINO (contrastive denoising, mixed query selection, look-forward-twice) as a detectron2
meta-architecture on the parts of ``d2ext.modeling.deformable_detr``; the base detector of
Co-DINO."""

from .criterion import DINOCriterion
from .denoising import ContrastiveDenoising, DenoisingQueries, dn_attention_mask
from .detector import DINO
from .transformer import DINOTransformer

__all__ = [
    "DINO",
    "ContrastiveDenoising",
    "DINOCriterion",
    "DINOTransformer",
    "DenoisingQueries",
    "dn_attention_mask",
]
