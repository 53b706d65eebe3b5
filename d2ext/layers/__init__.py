"""Public operators of d2ext; each runs its compiled kernel when built, else its reference."""

from .assign_fpn_levels import (
    SOCO_THRESHOLDS,
    assign_fpn_levels,
    assign_levels_detectron2,
    assign_levels_detectron2_reference,
    assign_levels_soco,
    assign_levels_soco_reference,
)
from .box_jitter import box_jitter, box_jitter_reference, clip_boxes_to_view
from .ms_deform_attn import ms_deform_attn, ms_deform_attn_reference

__all__ = [
    "SOCO_THRESHOLDS",
    "assign_fpn_levels",
    "assign_levels_detectron2",
    "assign_levels_detectron2_reference",
    "assign_levels_soco",
    "assign_levels_soco_reference",
    "box_jitter",
    "box_jitter_reference",
    "clip_boxes_to_view",
    "ms_deform_attn",
    "ms_deform_attn_reference",
]

from .soft_nms import batched_soft_nms, soft_nms  # noqa: E402

__all__ += ["batched_soft_nms", "soft_nms"]
