"""SoCo's box jitter (Wei et al., NeurIPS 2021) and the clip-to-view step that follows it."""

import torch

from ._ops import check, check_boxes, use_compiled

__all__ = ["box_jitter", "box_jitter_reference", "clip_boxes_to_view"]

_OP = "d2ext::box_jitter"


def _check_inputs(boxes: torch.Tensor, rand: torch.Tensor, prob: float, ratio: float) -> None:
    check_boxes(_OP, boxes)
    n = boxes.shape[0]
    check(
        rand.dim() == 2 and tuple(rand.shape) == (n, 5),
        f"{_OP}: rand must have shape [N, 5] = [{n}, 5], got {list(rand.shape)}",
    )
    check(rand.dtype == boxes.dtype, f"{_OP}: rand must have the dtype of boxes ({boxes.dtype})")
    check(
        rand.device == boxes.device,
        f"{_OP}: boxes and rand are on different devices ({boxes.device} and {rand.device})",
    )
    check(bool(((rand >= 0) & (rand <= 1)).all()), f"{_OP}: rand must hold numbers in [0, 1]")
    check(0.0 <= prob <= 1.0, f"{_OP}: prob must be in [0, 1], got {prob}")
    check(0.0 <= ratio < 1.0, f"{_OP}: ratio must be in [0, 1), got {ratio}")


def box_jitter_reference(
    boxes: torch.Tensor, rand: torch.Tensor, prob: float = 0.5, ratio: float = 0.1
) -> torch.Tensor:
    """Pure-torch reference of :func:`box_jitter`; the compiled kernels match it exactly."""
    _check_inputs(boxes, rand, prob, ratio)
    w = boxes[:, 2] - boxes[:, 0] + 1  # inclusive pixel widths
    h = boxes[:, 3] - boxes[:, 1] + 1
    u = (rand[:, 1:] * 2 - 1) * ratio  # [N, 4] ~ U(-ratio, ratio)
    x1 = boxes[:, 0] + u[:, 0] * w
    y1 = boxes[:, 1] + u[:, 1] * h
    nw = w * (u[:, 2] + 1)
    nh = h * (u[:, 3] + 1)
    jittered = torch.stack([x1, y1, x1 + nw - 1, y1 + nh - 1], dim=1)
    return torch.where((rand[:, :1] < prob), jittered, boxes)


def box_jitter(
    boxes: torch.Tensor,
    prob: float = 0.5,
    ratio: float = 0.1,
    *,
    rand: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Jitters boxes as SoCo does: with probability ``prob`` per box, draw u ~ U(-r, r)^4 and

        x1' = x1 + u0 * w,  y1' = y1 + u1 * h,  w' = w * (1 + u2),  h' = h * (1 + u3),
        x2' = x1' + w' - 1, y2' = y1' + h' - 1,

    with inclusive pixel widths w = x2 - x1 + 1. Like the authors' code it does not clip: a
    jittered box may leave the image, and a box of 1-2 px may come out inverted (x2' < x1');
    :func:`clip_boxes_to_view` is the separate step that deals with both.

    Args:
        boxes: [N, 4] float32/float64 XYXY boxes in inclusive pixel coordinates.
        prob: probability that a box is jittered (SoCo: 0.5).
        ratio: r, the half-width of the uniform offsets (SoCo: 0.1); in [0, 1).
        rand: optional [N, 5] uniforms in [0, 1] of the boxes' dtype and device: column 0
            decides (jitter iff < prob), columns 1-4 give u = r * (2 * rand - 1). Passing it
            makes CPU, CUDA and the reference produce the same numbers.
        generator: used to draw ``rand`` when it is not given.

    Returns:
        [N, 4] jittered boxes, same dtype and device.
    """
    check(
        boxes.dtype in (torch.float32, torch.float64),
        f"{_OP}: boxes must be float32 or float64, got {boxes.dtype} (convert with .float())",
    )
    if rand is None:
        rand = torch.rand(
            (boxes.shape[0], 5), generator=generator, dtype=boxes.dtype, device=boxes.device
        )
    if use_compiled("box_jitter", boxes):
        return torch.ops.d2ext.box_jitter(boxes, rand, float(prob), float(ratio))
    return box_jitter_reference(boxes, rand, prob, ratio)


def clip_boxes_to_view(
    boxes: torch.Tensor,
    height: int,
    width: int,
    fallback_to_view: bool = True,
    rule: str = "soco",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips inclusive pixel boxes to a ``height`` x ``width`` view (corners (0, 0) and
    (W-1, H-1)).

    ``rule="soco"`` is SoCo's ``clip_bboxs``: a box is kept iff 0 < x2, x1 < W-1, 0 < y2 and
    y1 < H-1 (all strict), and becomes its intersection with the view; a kept box that was
    inverted (x2 < x1 or y2 < y1) stays inverted. ``rule="intersect"`` clamps x1, y1 >= 0,
    x2 <= W-1, y2 <= H-1 and keeps the boxes with x2 >= x1 and y2 >= y1 (edge-touching boxes
    kept as 0-width boxes, inverted ones dropped).

    Args:
        boxes: [N, 4] XYXY inclusive pixel boxes, in the view's pixels.
        height, width: the view's size in pixels.
        fallback_to_view: when no box is kept, return the whole view [0, 0, W-1, H-1] as the
            single box (SoCo's behaviour); otherwise return an empty [0, 4] tensor.
        rule: "soco" or "intersect", as above.

    Returns:
        (clipped boxes [M, 4], indices [M] of the kept input boxes; -1 marks the fallback box).
    """
    check(height > 0 and width > 0, f"clip_boxes_to_view: empty view {height}x{width}")
    check(
        rule in ("soco", "intersect"),
        f"clip_boxes_to_view: rule must be 'soco' or 'intersect', got {rule!r}",
    )
    check_boxes("clip_boxes_to_view", boxes)
    x1 = boxes[:, 0].clamp(min=0)
    y1 = boxes[:, 1].clamp(min=0)
    x2 = boxes[:, 2].clamp(max=width - 1)
    y2 = boxes[:, 3].clamp(max=height - 1)
    if rule == "soco":
        b = boxes
        kept = (b[:, 2] > 0) & (b[:, 0] < width - 1) & (b[:, 3] > 0) & (b[:, 1] < height - 1)
    else:
        kept = (x2 >= x1) & (y2 >= y1)
    keep = torch.nonzero(kept).flatten()
    clipped = torch.stack([x1, y1, x2, y2], dim=1)[keep]
    if keep.numel() == 0 and fallback_to_view:
        clipped = boxes.new_tensor([[0, 0, width - 1, height - 1]])
        keep = torch.full((1,), -1, dtype=torch.int64, device=boxes.device)
    return clipped, keep
