"""Soft-NMS (Bodla et al., 2017) with mmcv's semantics, the test-time NMS of Co-DINO
(``nms=dict(type='soft_nms', iou_threshold=0.8)``, mmcv's defaults: linear, sigma 0.5,
min_score 1e-3).

It follows mmcv's CPU kernel (``softnms_cpu``) step by step, so that kept indices, their order
and their scores are the same:

1. among the boxes still in play, take the one of highest current score (the first in the
   working order on ties), record it with that score;
2. decay every other box in play by its IoU ``o`` with it: linear ``1 - o`` where
   ``o >= iou_threshold`` (else unchanged), gaussian ``exp(-o^2 / sigma)`` (always), naive
   ``0`` where ``o >= iou_threshold``;
3. drop every decayed box whose score falls below ``min_score``, filling its slot with the
   last box in play (mmcv's swap-with-last, which sets the working order for later ties);
4. repeat until no box is left in play.

IoU uses areas ``(x2 - x1) * (y2 - y1)`` (mmcv's ``offset=0``) in float32, as the kernel does.
The selected box itself is never tested against ``min_score``. mmcv runs this on the CPU
whatever the input's device; so does this implementation (numpy, one vectorised step per kept
box), and the results come back on the input's device.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["batched_soft_nms", "soft_nms"]

_METHODS = ("linear", "gaussian", "naive")
# mmcv's batched_nms runs one NMS over class-offset boxes below this many boxes, else one per
# class (the results can differ only in the order of equal scores)
_SPLIT_THRESHOLD = 10000


def _check(boxes: torch.Tensor, scores: torch.Tensor, method: str, sigma: float) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must be [N] with N = {boxes.shape[0]} boxes, got {tuple(scores.shape)}"
        )
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"the gaussian method needs sigma > 0, got {sigma}")


def _compact(removed: np.ndarray) -> np.ndarray:
    """The working order after mmcv's swap-with-last removals over one segment.

    Args:
        removed: [M] bool, the boxes of the segment (in working order) that are dropped.

    Returns:
        np.ndarray: positions (into the segment) of the boxes left, in their new order.
    """
    last = removed.shape[0] - 1
    flags = removed.tolist()
    moved = {}
    for p in np.flatnonzero(removed).tolist():
        if p > last:
            break
        while True:  # slot p holds a dropped box: pull boxes from the end until one stays
            if last == p:
                last -= 1
                break
            candidate, last = last, last - 1
            if not flags[candidate]:
                moved[p] = candidate
                break
    order = np.arange(last + 1)
    for p, candidate in moved.items():
        order[p] = candidate
    return order


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    iou_threshold: float = 0.8,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "linear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS of one group of boxes, as mmcv's ``soft_nms`` (see the module docstring).

    Args:
        boxes: [N, 4] boxes (x1, y1, x2, y2), computed in float32.
        scores: [N] scores.
        iou_threshold: IoU from which the linear and naive methods decay a box.
        sigma: the gaussian method's ``sigma`` (``exp(-iou^2 / sigma)``).
        min_score: a decayed box scoring below this is dropped.
        method: "linear" (mmcv's default), "gaussian" or "naive" (hard NMS).

    Returns:
        tuple[Tensor, Tensor]: ``keep`` [K] int64 indices into the input in selection order
        (so by non-increasing new score), and ``new_scores`` [K] (the scores' dtype) of those
        boxes after the decays; both on the input's device.
    """
    _check(boxes, scores, method, sigma)
    device, dtype = scores.device, scores.dtype
    n = boxes.shape[0]
    if n == 0:
        return (
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, dtype=dtype, device=device),
        )
    b = boxes.detach().to("cpu", torch.float32).numpy()
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    sc = scores.detach().to("cpu", torch.float32).numpy().copy()
    areas = (x2 - x1) * (y2 - y1)
    inds = np.arange(n)
    arrays = [x1, y1, x2, y2, sc, areas, inds]
    thr, sig, low = np.float32(iou_threshold), np.float32(sigma), np.float32(min_score)
    one, zero = np.float32(1.0), np.float32(0.0)
    i = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        while i < n:
            top = i + int(np.argmax(sc[i:n]))  # the first of equal maxima, as the kernel
            if top != i:
                for a in arrays:
                    a[i], a[top] = a[top], a[i]
            if i + 1 < n:
                rest = slice(i + 1, n)
                w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
                h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
                inter = w * h
                iou = inter / (areas[i] + areas[rest] - inter)
                if method == "linear":
                    weight = np.where(iou >= thr, one - iou, one)
                elif method == "gaussian":
                    weight = np.exp(-(iou * iou) / sig)
                else:
                    weight = np.where(iou >= thr, zero, one)
                sc[rest] = sc[rest] * weight.astype(np.float32)
                removed = sc[rest] < low
                if removed.any():
                    order = _compact(removed) + (i + 1)
                    for a in arrays:
                        a[i + 1 : i + 1 + order.shape[0]] = a[order]
                    n = i + 1 + order.shape[0]
            i += 1
    keep = torch.from_numpy(inds[:n].copy()).to(device)
    return keep, torch.from_numpy(sc[:n].copy()).to(device=device, dtype=dtype)


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    *,
    iou_threshold: float = 0.8,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "linear",
    max_dets: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS within each group (class) of boxes, as mmcv's ``batched_nms`` with a
    ``soft_nms`` config: below 10000 boxes, one :func:`soft_nms` over boxes shifted by
    ``idx * (max coordinate + 1)`` so that groups never overlap (a box of another group decays
    nothing, but a score below ``min_score`` is still dropped when it is first decayed, as in
    mmcv); from 10000 boxes, one :func:`soft_nms` per group, then all sorted by new score.
    Co-DINO keeps the first ``max_per_img`` (300) of the result: ``max_dets``.

    Args:
        boxes: [N, 4] boxes (x1, y1, x2, y2).
        scores: [N] scores.
        idxs: [N] int group (class) of each box.
        iou_threshold, sigma, min_score, method: as in :func:`soft_nms`.
        max_dets: keep at most this many (None: all).

    Returns:
        tuple[Tensor, Tensor]: ``keep`` [K] int64 indices into the input, by non-increasing new
        score, and ``new_scores`` [K] after the decays.
    """
    _check(boxes, scores, method, sigma)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must be [N] like scores, got {tuple(idxs.shape)}")
    if idxs.is_floating_point():
        raise ValueError("idxs must be an integer tensor")
    if max_dets is not None and max_dets < 0:
        raise ValueError(f"max_dets must be >= 0 or None, got {max_dets}")
    kwargs = {
        "iou_threshold": iou_threshold,
        "sigma": sigma,
        "min_score": min_score,
        "method": method,
    }
    if boxes.shape[0] == 0:
        keep, new_scores = soft_nms(boxes, scores, **kwargs)
    elif boxes.shape[0] < _SPLIT_THRESHOLD:
        boxes32 = boxes.detach().float()
        offsets = idxs.to(boxes32) * (boxes32.max() + 1)
        keep, new_scores = soft_nms(boxes32 + offsets[:, None], scores, **kwargs)
    else:
        keeps, kept_scores = [], []
        for group in torch.unique(idxs):
            members = (idxs == group).nonzero().view(-1)
            k, s = soft_nms(boxes[members], scores[members], **kwargs)
            keeps.append(members[k])
            kept_scores.append(s)
        keep, new_scores = torch.cat(keeps), torch.cat(kept_scores)
        new_scores, order = new_scores.sort(descending=True)
        keep = keep[order]
    if max_dets is not None:
        keep, new_scores = keep[:max_dets], new_scores[:max_dets]
    return keep, new_scores
