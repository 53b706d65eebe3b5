"""How well one set of proposals covers another (for comparing backends)."""

import numpy as np

__all__ = ["iou_xywh", "recall_hits"]


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of two sets of XYWH boxes."""
    ax2, ay2 = a[:, None, 0] + a[:, None, 2], a[:, None, 1] + a[:, None, 3]
    bx2, by2 = b[None, :, 0] + b[None, :, 2], b[None, :, 1] + b[None, :, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def recall_hits(reference: np.ndarray, candidates: np.ndarray, iou: float = 0.7) -> int:
    """How many XYWH ``reference`` boxes have a ``candidates`` box at IoU >= ``iou``."""
    if len(reference) == 0 or len(candidates) == 0:
        return 0
    return int((iou_xywh(reference, candidates).max(axis=1) >= iou).sum())
