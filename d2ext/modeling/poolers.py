"""An ROIPooler whose box -> FPN level rule is a parameter."""

from collections.abc import Callable, Sequence

import torch
from detectron2.layers import nonzero_tuple
from detectron2.modeling.poolers import ROIPooler, convert_boxes_to_pooler_format
from detectron2.structures import Boxes

from d2ext.layers import SOCO_THRESHOLDS, assign_levels_detectron2, assign_levels_soco
from d2ext.utils.d2_compat import create_zeros as _create_zeros

__all__ = ["ScaleAwareROIPooler"]

LevelRule = str | Callable[[torch.Tensor], torch.Tensor] | None


class ScaleAwareROIPooler(ROIPooler):
    """:class:`detectron2.modeling.ROIPooler` with the level assignment as a parameter.

    With ``level_rule="detectron2"`` it returns exactly what ``ROIPooler`` returns. With
    ``level_rule="soco"`` each box goes to the first level whose upper bound on
    sqrt(w * h) it does not exceed (SoCo: 48/96/192/224 for P2..P5); boxes above the last
    bound have no level (unless ``clamp_top``) and get all-zero features. A callable
    ``rule(boxes [M, 4]) -> int64 [M]`` (indices into the pooled levels, -1 for none) may be
    given instead, and ``forward`` also accepts precomputed ``level_assignments``. With
    ``level_rule=None`` the pooler has no rule of its own: the caller owns the levels and
    ``forward`` requires ``level_assignments``.
    """

    def __init__(
        self,
        *,
        level_rule: LevelRule = "detectron2",
        soco_thresholds: Sequence[float] = SOCO_THRESHOLDS,
        soco_inclusive: bool = True,
        clamp_top: bool = False,
        **kwargs,
    ):
        """
        Args:
            level_rule: "detectron2", "soco", a callable as described above, or None (the
                levels are always given to ``forward``).
            soco_thresholds: the "soco" rule's upper bounds, one per pooled level.
            soco_inclusive: the "soco" rule measures inclusive pixel widths (x2 - x1 + 1).
            clamp_top: the "soco" rule puts boxes above the last bound on the last level.
            kwargs: the arguments of :class:`ROIPooler` (output_size, scales, sampling_ratio,
                pooler_type, canonical_box_size, canonical_level).
        """
        super().__init__(**kwargs)
        if isinstance(level_rule, str) and level_rule not in ("detectron2", "soco"):
            raise ValueError(
                f"level_rule must be 'detectron2', 'soco' or a callable: {level_rule!r}"
            )
        if level_rule is not None and not isinstance(level_rule, str) and not callable(level_rule):
            raise ValueError(f"level_rule must be a str, a callable or None: {level_rule!r}")
        if level_rule == "soco" and len(soco_thresholds) != len(self.level_poolers):
            raise ValueError(
                f"{len(soco_thresholds)} soco_thresholds for {len(self.level_poolers)} levels"
            )
        self.level_rule = level_rule
        self.soco_thresholds = tuple(float(t) for t in soco_thresholds)
        self.soco_inclusive = soco_inclusive
        self.clamp_top = clamp_top

    def assign_levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """Level index (into the pooled levels) of each box of [M, 4] ``boxes``; -1 for none."""
        if self.level_rule is None:
            raise ValueError(
                "this ScaleAwareROIPooler has no level rule (level_rule=None): its caller "
                "assigns the levels and passes level_assignments"
            )
        if self.level_rule == "detectron2":
            return assign_levels_detectron2(
                boxes, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
            )
        if self.level_rule == "soco":
            return assign_levels_soco(
                boxes, self.soco_thresholds, self.soco_inclusive, self.clamp_top
            )
        return self.level_rule(boxes)

    def forward(
        self,
        x: list[torch.Tensor],
        box_lists: list[Boxes],
        level_assignments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            x: feature maps [N, C, H_l, W_l], one per level of ``scales``.
            box_lists: N Boxes, in the input image's coordinates.
            level_assignments: optional int64 [M] level of each of the M boxes (-1: none);
                computed with ``level_rule`` when not given (required when it is None).

        Returns:
            [M, C, output_size, output_size] pooled features; zeros for boxes without a level.
        """
        if len(x) != len(self.level_poolers) or len(box_lists) != x[0].size(0):
            raise ValueError(
                f"{len(x)} feature maps for {len(self.level_poolers)} levels, "
                f"{len(box_lists)} box lists for a batch of {x[0].size(0)}"
            )
        if len(box_lists) == 0:
            return _create_zeros(None, x[0].shape[1], *self.output_size, x[0])
        pooler_fmt_boxes = convert_boxes_to_pooler_format(box_lists)  # [M, 5]
        if level_assignments is None:
            if len(self.level_poolers) == 1 and self.level_rule == "detectron2":
                return self.level_poolers[0](x[0], pooler_fmt_boxes)
            level_assignments = self.assign_levels(pooler_fmt_boxes[:, 1:])

        output = _create_zeros(pooler_fmt_boxes, x[0].shape[1], *self.output_size, x[0])
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(level_assignments == level)[0]
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes[inds]))
        return output
