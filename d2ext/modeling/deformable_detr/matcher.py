"""Hungarian matching of DETR predictions to ground truth (scipy's linear_sum_assignment)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher", "focal_class_cost"]


def focal_class_cost(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Deformable DETR's classification cost: the focal loss of calling the query class ``l``
    minus that of calling it background, (Q, K) logits x (G,) labels -> (Q, G)."""
    p = logits.sigmoid()
    neg = (1 - alpha) * p.pow(gamma) * -(1 - p + 1e-8).log()
    pos = alpha * (1 - p).pow(gamma) * -(p + 1e-8).log()
    return pos[:, labels] - neg[:, labels]


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising ``cost_class`` * focal cost + ``cost_bbox`` * L1 of
    normalised (cx, cy, w, h) + ``cost_giou`` * (-GIoU), per image (authors' 2 / 5 / 2)."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    def cost_matrix(self, logits, boxes, tgt_labels, tgt_boxes) -> torch.Tensor:
        """(Q, K), (Q, 4) predictions x (G,), (G, 4) targets -> (Q, G) cost."""
        c_cls = focal_class_cost(logits.float(), tgt_labels, self.alpha, self.gamma)
        c_box = torch.cdist(boxes.float(), tgt_boxes.float(), p=1)
        c_giou = -generalized_box_iou(
            box_convert(boxes.float(), "cxcywh", "xyxy"),
            box_convert(tgt_boxes.float(), "cxcywh", "xyxy"),
        )
        return self.cost_bbox * c_box + self.cost_class * c_cls + self.cost_giou * c_giou

    @torch.no_grad()
    def forward(self, logits, boxes, targets) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """logits (N, Q, K), boxes (N, Q, 4); targets: per image dict with ``labels`` (G,) and
        ``boxes`` (G, 4) normalised cxcywh. Returns per image (query indices, target indices)."""
        out = []
        for i, t in enumerate(targets):
            if len(t["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.long, device=logits.device)
                out.append((empty, empty))
                continue
            cost = self.cost_matrix(logits[i], boxes[i], t["labels"], t["boxes"])
            if not torch.isfinite(cost).all():
                raise FloatingPointError("non-finite matching cost (NaN/inf predictions)")
            qi, ti = linear_sum_assignment(cost.cpu().numpy())
            out.append(
                (
                    torch.as_tensor(qi, dtype=torch.long, device=logits.device),
                    torch.as_tensor(ti, dtype=torch.long, device=logits.device),
                )
            )
        return out
