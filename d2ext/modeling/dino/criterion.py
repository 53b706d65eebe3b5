"""DINO's losses: Deformable DETR's set losses (``SetCriterion``) with the encoder proposals
classified by their classes, plus the denoising queries' losses under their known assignment."""

from __future__ import annotations

import torch

from d2ext.modeling.deformable_detr.criterion import SetCriterion, layer_suffixes, num_positives
from d2ext.modeling.losses import aligned_box_iou, quality_focal_loss

from .denoising import DenoisingQueries

__all__ = ["DINOCriterion"]


class DINOCriterion(SetCriterion):
    """Hungarian set losses on the matching queries of every decoder layer and on the selected
    encoder proposals (with their classes), and the denoising losses: every denoising query is
    supervised by the box it was made from (positives) or as background (negatives and free
    slots), with no matching; the same three weights as the matching losses on every layer, keys
    ``<loss><layer suffix>_dn``, normalised by boxes x groups.

    Args:
        class_loss: "focal": sigmoid focal loss (DINO); "quality_focal": quality focal loss with
            the IoU of the (detached) predicted box with its target as the positives' score
            (Co-DINO), on every loss set (matching, proposals, denoising, positive queries).
        qfl_beta: the quality focal loss's beta.
        kwargs: :class:`SetCriterion`'s arguments (``class_agnostic_proposals`` defaults to
            False here).
    """

    def __init__(
        self,
        *,
        class_loss: str = "focal",
        qfl_beta: float = 2.0,
        class_agnostic_proposals: bool = False,
        **kwargs,
    ):
        super().__init__(class_agnostic_proposals=class_agnostic_proposals, **kwargs)
        if class_loss not in ("focal", "quality_focal"):
            raise ValueError(f"class_loss must be 'focal' or 'quality_focal', got {class_loss!r}")
        self.class_loss, self.qfl_beta = class_loss, qfl_beta

    def classification_loss(self, logits, labels, boxes, target_boxes) -> torch.Tensor:
        """The summed focal or quality focal loss (see ``class_loss``) of (N, Q, K) logits
        against (N, Q) labels (background ``num_classes``), (N, Q, 4) boxes and targets
        (normalised cxcywh, read at positives)."""
        if self.class_loss == "focal":
            return super().classification_loss(logits, labels, boxes, target_boxes)
        pos = labels < self.num_classes
        scores = torch.zeros(labels.shape, dtype=logits.dtype, device=logits.device)
        scores[pos] = aligned_box_iou(boxes[pos].detach(), target_boxes[pos]).to(logits.dtype)
        return quality_focal_loss(logits, labels, scores, beta=self.qfl_beta, reduction="sum")

    def denoising_losses(
        self, logits: torch.Tensor, boxes: torch.Tensor, dn: DenoisingQueries
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            logits: [D, N, P, K] the denoising queries' logits of every decoder layer.
            boxes: [D, N, P, 4] their boxes (normalised cxcywh).
            dn: the queries' known targets.

        Returns:
            dict[str, Tensor]: the weighted ``*_dn`` losses.
        """
        num_pos = num_positives(dn.num_pos, logits.device)
        losses = {}
        for layer_logits, layer_boxes, suffix in zip(
            logits, boxes, layer_suffixes(logits.shape[0], two_stage=False)
        ):
            terms = self.dense_losses(
                layer_logits, layer_boxes, dn.labels, dn.target_boxes, num_pos, suffix
            )
            losses.update({f"{k}_dn": v for k, v in terms.items()})
        return losses

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """
        Args:
            outputs: ``SetCriterion``'s outputs, plus ``dn_logits`` [D, N, P, K], ``dn_boxes``
                [D, N, P, 4] and ``denoising`` (:class:`DenoisingQueries`) when the batch has
                denoising queries.
            targets: per image ``labels`` and ``boxes`` (normalised cxcywh).

        Returns:
            dict[str, Tensor]: the weighted losses.
        """
        losses = super().forward(outputs, targets)
        dn = outputs.get("denoising")
        if dn is not None:
            losses.update(self.denoising_losses(outputs["dn_logits"], outputs["dn_boxes"], dn))
        return losses
