"""Classification losses shared by detectors.

:func:`quality_focal_loss` is the Quality Focal Loss of Generalized Focal Loss (Li et al., 2020)
as mmdetection's ``QualityFocalLoss(use_sigmoid=True, activated=False)`` computes it, the
classification loss of Co-DINO (beta 2, weight 1). :func:`aligned_box_iou` gives the quality
targets the way Co-DINO's head does: the IoU of each (detached) predicted box with its
assigned ground-truth box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert

__all__ = ["aligned_box_iou", "quality_focal_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def quality_focal_loss(
    pred_logits: torch.Tensor,
    target_classes: torch.Tensor,
    target_scores: torch.Tensor,
    *,
    beta: float = 2.0,
    reduction: str = "sum",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Quality Focal Loss on sigmoid logits (Eq. (5) of Generalized Focal Loss).

    With p = sigmoid(pred_logits), every (prediction, class) element is a negative supervised
    towards 0: ``BCE(p, 0) * p**beta``, except the element of a positive prediction's own class
    ``c = target_classes[i]`` (``0 <= c < K``), supervised towards its quality score
    ``s = target_scores[i]``: ``BCE(p, s) * |s - p|**beta``. A class value outside [0, K)
    (e.g. K, detectron2's background index) marks a prediction with no positive class. As in
    mmdetection, the modulating factors are not detached: gradients flow through them.

    Args:
        pred_logits: [..., K] classification logits.
        target_classes: [...] int64 class per prediction; outside [0, K) = background.
        target_scores: [...] quality score in [0, 1] per prediction (read at positives only;
            Co-DINO: the IoU of the detached predicted box with its target box).
        beta: the exponent of the modulating factor.
        reduction: "none" (the [..., K] element losses), "sum", or "mean" (over elements).
        weight: optional [...] weight per prediction (mmdetection's ``label_weights``),
            applied before the reduction.

    Returns:
        Tensor: the loss ([..., K] for "none", a scalar otherwise).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if pred_logits.dim() < 1:
        raise ValueError("pred_logits needs a class dimension [..., K]")
    lead = pred_logits.shape[:-1]
    if target_classes.shape != lead or target_scores.shape != lead:
        raise ValueError(
            f"target_classes {tuple(target_classes.shape)} and target_scores "
            f"{tuple(target_scores.shape)} must have the shape of pred_logits without its class "
            f"dimension, {tuple(lead)}"
        )
    if target_classes.is_floating_point():
        raise ValueError("target_classes must be an integer tensor")
    if weight is not None and weight.shape != lead:
        raise ValueError(f"weight must have shape {tuple(lead)}, got {tuple(weight.shape)}")
    num_classes = pred_logits.shape[-1]
    prob = pred_logits.sigmoid()
    positive = (target_classes >= 0) & (target_classes < num_classes)
    # one-hot of each positive's class: where the quality target replaces the 0 target
    onehot = F.one_hot(target_classes.clamp(0, num_classes - 1).long(), num_classes).bool()
    onehot &= positive[..., None]
    target = torch.where(onehot, target_scores[..., None].to(prob.dtype), torch.zeros_like(prob))
    bce = F.binary_cross_entropy_with_logits(pred_logits, target, reduction="none")
    loss = bce * (target - prob).abs().pow(beta)  # negatives: |0 - p|^beta = p^beta
    if weight is not None:
        loss = loss * weight[..., None].to(loss.dtype)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def aligned_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor, *, box_format: str = "cxcywh", eps: float = 1e-6
) -> torch.Tensor:
    """IoU of each box in ``boxes1`` with the box at the same index in ``boxes2``, as
    mmdetection's ``bbox_overlaps(..., is_aligned=True)`` (union floored at ``eps``). Co-DINO's
    quality target is ``aligned_box_iou(pred_boxes.detach(), target_boxes)``; this function
    does not detach.

    Args:
        boxes1: [..., 4] boxes.
        boxes2: [..., 4] boxes, the same shape.
        box_format: "cxcywh" or "xyxy" (torchvision's names), for both inputs.
        eps: the least union.

    Returns:
        Tensor: [...] IoU per pair.
    """
    if boxes1.shape != boxes2.shape or boxes1.shape[-1:] != (4,):
        raise ValueError(
            f"need two [..., 4] tensors of one shape, got {tuple(boxes1.shape)}, "
            f"{tuple(boxes2.shape)}"
        )
    if box_format != "xyxy":
        boxes1 = box_convert(boxes1, box_format, "xyxy")
        boxes2 = box_convert(boxes2, box_format, "xyxy")
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    union = (area1 + area2 - overlap).clamp(min=eps)
    return overlap / union
