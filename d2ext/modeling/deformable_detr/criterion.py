"""DETR losses: sigmoid focal classification, L1 and GIoU on normalised boxes, for every
decoder layer and the two-stage encoder proposals.

``decoder_loss_weights`` names the weight of every loss term as a function of the decoder
depth (the last layer unsuffixed, layer i ``_i``, encoder proposals ``_enc``), so a config sets
three numbers and the layer count, never a loop. ``dense_losses`` takes per-query targets
(background = ``num_classes``) and is shared by the Hungarian path and Co-DETR's positive
queries, which come with their own assignment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from d2ext.utils.dist import mean_over_workers

from .matcher import HungarianMatcher

__all__ = ["SetCriterion", "decoder_loss_weights", "layer_suffixes", "num_positives"]

LOSS_NAMES = ("loss_class", "loss_bbox", "loss_giou")


def layer_suffixes(num_decoder_layers: int, two_stage: bool = True) -> list[str]:
    """Suffix of each prediction set: decoder layers first to last, then the encoder's."""
    suffixes = [f"_{i}" for i in range(num_decoder_layers - 1)] + [""]
    return suffixes + (["_enc"] if two_stage else [])


def decoder_loss_weights(
    num_decoder_layers: int,
    loss_class: float = 2.0,
    loss_bbox: float = 5.0,
    loss_giou: float = 2.0,
    two_stage: bool = True,
) -> dict[str, float]:
    """The weight of every loss term: each decoder layer (and the encoder proposals) gets the
    same three weights (Deformable DETR: focal 2, L1 5, GIoU 2)."""
    base = {"loss_class": loss_class, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
    return {
        name + suffix: w
        for suffix in layer_suffixes(num_decoder_layers, two_stage)
        for name, w in base.items()
    }


def num_positives(n: int, device) -> float:
    """The normaliser of DETR losses: positives per worker averaged over workers, at least 1."""
    return max(mean_over_workers(n, device), 1.0)


class SetCriterion(nn.Module):
    """DETR set losses: Hungarian matching per prediction set (each decoder layer, and the encoder
    proposals with every object as class 0), then sigmoid focal, L1 and GIoU losses.

    Args:
        num_classes: the number of foreground classes; label ``num_classes`` is background.
        matcher: matches predictions to targets.
        weight_dict: the weight of every loss term, by name with its layer suffix (see
            :func:`decoder_loss_weights`).
        focal_alpha, focal_gamma: the focal loss's alpha and gamma.
        class_agnostic_proposals: the encoder proposals are matched and classified with every
            object as class 0 (Deformable DETR, Co-Deformable-DETR); False: with their classes
            (DINO).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        class_agnostic_proposals: bool = True,
    ):
        super().__init__()
        self.num_classes, self.matcher, self.weight_dict = num_classes, matcher, dict(weight_dict)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.class_agnostic_proposals = class_agnostic_proposals

    def classification_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        boxes: torch.Tensor,
        target_boxes: torch.Tensor,
    ) -> torch.Tensor:
        """The summed sigmoid focal loss of (N, Q, K) logits against (N, Q) labels (background
        ``num_classes``); ``boxes`` / ``target_boxes`` (N, Q, 4) are unused here (a subclass's
        IoU-aware loss reads them)."""
        onehot = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes].to(logits)
        return sigmoid_focal_loss(
            logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        )

    def dense_losses(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        target_boxes: torch.Tensor,
        num_pos: float,
        suffix: str = "",
        scale: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """logits (N, Q, K), boxes (N, Q, 4) normalised cxcywh; labels (N, Q) with background
        ``num_classes``; target_boxes (N, Q, 4) (read only where labels are foreground).
        Returns weighted ``loss_*{suffix}`` terms (times ``scale``), each a sum over positives
        divided by ``num_pos``."""
        cls = self.classification_loss(logits, labels, boxes, target_boxes)
        pos = labels < self.num_classes
        src, tgt = boxes[pos], target_boxes[pos]
        l1 = F.l1_loss(src, tgt, reduction="sum")
        giou = generalized_box_iou_loss(
            box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")
        ).sum()
        raw = {"loss_class": cls, "loss_bbox": l1, "loss_giou": giou}
        return {
            name + suffix: v / num_pos * self.weight_dict[name + suffix] * scale
            for name, v in raw.items()
        }

    def hungarian_targets(self, logits, boxes, targets, matches=None):
        """Matches one prediction set (or takes ``matches``): dense (N, Q) labels and (N, Q, 4)
        boxes."""
        if matches is None:
            matches = self.matcher(logits, boxes, targets)
        n, q = logits.shape[:2]
        labels = torch.full((n, q), self.num_classes, dtype=torch.long, device=logits.device)
        tboxes = torch.zeros((n, q, 4), dtype=boxes.dtype, device=boxes.device)
        for i, (qi, ti) in enumerate(matches):
            labels[i, qi] = targets[i]["labels"][ti]
            tboxes[i, qi] = targets[i]["boxes"][ti].to(boxes.dtype)
        return labels, tboxes

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs: ``pred_logits`` (D, N, Q, K), ``pred_boxes`` (D, N, Q, 4), optionally
        ``enc_logits`` / ``enc_boxes`` (N, S, ...). targets: per image ``labels`` and ``boxes``
        (normalised cxcywh). Each layer is matched on its own."""
        num_layers = outputs["pred_logits"].shape[0]
        two_stage = outputs.get("enc_logits") is not None
        suffixes = layer_suffixes(num_layers, two_stage)
        num_pos = num_positives(
            sum(len(t["labels"]) for t in targets), outputs["pred_logits"].device
        )
        sets = list(zip(outputs["pred_logits"], outputs["pred_boxes"]))
        if two_stage:
            sets.append((outputs["enc_logits"], outputs["enc_boxes"]))
        losses = {}
        for (logits, boxes), suffix in zip(sets, suffixes):
            tg = targets
            if suffix == "_enc" and self.class_agnostic_proposals:  # every object is class 0
                tg = [
                    {"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets
                ]
            labels, tboxes = self.hungarian_targets(logits, boxes, tg)
            losses.update(self.dense_losses(logits, boxes, labels, tboxes, num_pos, suffix))
        return losses
