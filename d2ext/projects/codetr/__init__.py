"""Co-DETR: collaborative hybrid assignments on two-stage Deformable DETR."""

from .modeling import (
    AUXILIARY_PREFIXES,
    CoDeformableDETR,
    CoStandardROIHeads,
    MultiScaleAdapter,
    build_positive_queries,
    octave_anchor_sizes,
    strip_auxiliary,
)

__all__ = [
    "AUXILIARY_PREFIXES",
    "CoDeformableDETR",
    "CoStandardROIHeads",
    "MultiScaleAdapter",
    "build_positive_queries",
    "octave_anchor_sizes",
    "strip_auxiliary",
]
