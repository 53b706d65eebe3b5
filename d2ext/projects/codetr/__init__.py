"""Co-DETR: collaborative hybrid assignments on two-stage Deformable DETR (Co-Deformable-DETR)
and on DINO (Co-DINO)."""

from .codino import CoDINO
from .modeling import (
    AUXILIARY_PREFIXES,
    CoDeformableDETR,
    CoStandardROIHeads,
    MultiScaleAdapter,
    build_positive_queries,
    octave_anchor_sizes,
    strip_auxiliary,
)
from .optim import ViTLayerDecayLRFactor

__all__ = [
    "AUXILIARY_PREFIXES",
    "CoDINO",
    "CoDeformableDETR",
    "CoStandardROIHeads",
    "MultiScaleAdapter",
    "ViTLayerDecayLRFactor",
    "build_positive_queries",
    "octave_anchor_sizes",
    "strip_auxiliary",
]
