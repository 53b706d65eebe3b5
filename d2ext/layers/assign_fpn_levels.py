"""Scale-aware FPN level assignment: SoCo's threshold rule and detectron2's log rule."""

from collections.abc import Sequence

import torch

from ._ops import check, check_boxes, use_compiled

__all__ = [
    "SOCO_THRESHOLDS",
    "assign_fpn_levels",
    "assign_levels_detectron2",
    "assign_levels_detectron2_reference",
    "assign_levels_soco",
    "assign_levels_soco_reference",
]

# The eps detectron2 adds inside log2 in assign_boxes_to_levels (upstream commit a59f0563;
# older releases used sys.float_info.epsilon, which moves boxes within a float of a boundary).
DETECTRON2_EPS = 1e-8
# Levels the ops support (kMaxLevels in csrc/assign_fpn_levels/assign_fpn_levels.h).
MAX_LEVELS = 8
# Upper bounds (inclusive) of sqrt(w * h) for P2, P3, P4, P5 in SoCo's code.
SOCO_THRESHOLDS = (48.0, 96.0, 192.0, 224.0)


def _check_thresholds(op: str, thresholds: Sequence[float]) -> None:
    check(
        1 <= len(thresholds) <= MAX_LEVELS,
        f"{op}: between 1 and {MAX_LEVELS} thresholds are supported",
    )
    check(
        all(b > a for a, b in zip(thresholds, thresholds[1:], strict=False)),
        f"{op}: thresholds must be strictly increasing, got {list(thresholds)}",
    )


def _check_area(op: str, area: torch.Tensor) -> None:
    check(
        not bool((area < 0).any()),
        f"{op}: a box has negative area (exactly one of its sides is negative), so it has no "
        "scale; filter or fix such boxes first",
    )


def assign_levels_soco_reference(
    boxes: torch.Tensor,
    thresholds: Sequence[float] = SOCO_THRESHOLDS,
    inclusive: bool = True,
    clamp_top: bool = False,
) -> torch.Tensor:
    """Pure-torch reference of :func:`assign_levels_soco`."""
    op = "d2ext::assign_fpn_levels_threshold"
    check_boxes(op, boxes)
    _check_thresholds(op, thresholds)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if inclusive:
        w = w + 1
        h = h + 1
    area = w * h
    _check_area(op, area)
    s = torch.sqrt(area)  # [N]
    bounds = torch.tensor(thresholds, dtype=boxes.dtype, device=boxes.device)  # [L]
    # The first j with s <= T_j is the number of bounds strictly below s.
    level = (s[:, None] > bounds[None, :]).sum(dim=1)
    top = len(thresholds) - 1 if clamp_top else -1
    return torch.where(level == len(thresholds), torch.full_like(level, top), level)


def assign_levels_soco(
    boxes: torch.Tensor,
    thresholds: Sequence[float] = SOCO_THRESHOLDS,
    inclusive: bool = True,
    clamp_top: bool = False,
) -> torch.Tensor:
    """SoCo's scale-aware rule: s = sqrt(w * h) in view pixels, level = the first j with
    s <= thresholds[j] (upper bounds inclusive).

    Args:
        boxes: [N, 4] float32/float64 XYXY boxes.
        thresholds: increasing upper bounds of s, one per level (SoCo: 48, 96, 192, 224 for
            P2..P5).
        inclusive: use SoCo's inclusive pixel widths w = x2 - x1 + 1.
        clamp_top: boxes with s above the last bound get the last level instead of -1. SoCo's
            code leaves them without a level (-1) and never pairs them: the default.

    Returns:
        int64 [N] level indices into ``thresholds`` (0 = the first level), or -1.
    """
    thresholds = [float(t) for t in thresholds]
    if use_compiled("assign_fpn_levels_threshold", boxes):
        return torch.ops.d2ext.assign_fpn_levels_threshold(boxes, thresholds, inclusive, clamp_top)
    return assign_levels_soco_reference(boxes, thresholds, inclusive, clamp_top)


def _check_log_args(op: str, min_level: int, max_level: int, canonical_box_size: float) -> None:
    check(min_level <= max_level, f"{op}: min_level ({min_level}) > max_level ({max_level})")
    check(max_level - min_level < MAX_LEVELS, f"{op}: at most {MAX_LEVELS} levels are supported")
    check(canonical_box_size > 0, f"{op}: canonical_box_size must be positive")


def assign_levels_detectron2_reference(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_box_size: float = 224,
    canonical_level: int = 4,
) -> torch.Tensor:
    """Pure-torch reference of :func:`assign_levels_detectron2`: the same torch operations as
    ``detectron2.modeling.poolers.assign_boxes_to_levels``, with input checks."""
    op = "d2ext::assign_fpn_levels_log"
    check_boxes(op, boxes)
    _check_log_args(op, min_level, max_level, canonical_box_size)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    _check_area(op, area)
    box_sizes = torch.sqrt(area)
    # Eqn.(1) in FPN paper
    level = torch.floor(
        canonical_level + torch.log2(box_sizes / canonical_box_size + DETECTRON2_EPS)
    )
    level = torch.clamp(level, min=min_level, max=max_level)
    return level.to(torch.int64) - min_level


def assign_levels_detectron2(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_box_size: float = 224,
    canonical_level: int = 4,
) -> torch.Tensor:
    """Detectron2's rule floor(canonical_level + log2(sqrt(area) / canonical_box_size + eps))
    (Eq. (1) of FPN), clamped to [min_level, max_level]; the same numbers as
    ``detectron2.modeling.poolers.assign_boxes_to_levels``.

    Args:
        boxes: [N, 4] float32/float64 XYXY boxes (areas computed as detectron2 does, without
            the +1).
        min_level, max_level: the pyramid's levels (e.g. 2 and 5 for P2..P5).
        canonical_box_size, canonical_level: a box of this size maps to this level.

    Returns:
        int64 [N] level indices relative to ``min_level``.
    """
    if use_compiled("assign_fpn_levels_log", boxes):
        _check_log_args("d2ext::assign_fpn_levels_log", min_level, max_level, canonical_box_size)
        return torch.ops.d2ext.assign_fpn_levels_log(
            boxes, int(min_level), int(max_level), float(canonical_box_size), int(canonical_level)
        )
    return assign_levels_detectron2_reference(
        boxes, min_level, max_level, canonical_box_size, canonical_level
    )


def assign_fpn_levels(boxes: torch.Tensor, rule: str = "soco", **kwargs) -> torch.Tensor:
    """Dispatches to :func:`assign_levels_soco` (``rule="soco"``) or
    :func:`assign_levels_detectron2` (``rule="detectron2"``) with ``kwargs``."""
    if rule == "soco":
        return assign_levels_soco(boxes, **kwargs)
    if rule == "detectron2":
        return assign_levels_detectron2(boxes, **kwargs)
    raise ValueError(f"unknown level rule {rule!r}; expected 'soco' or 'detectron2'")
