"""DINO's losses: Deformable DETR's set losses (``SetCriterion``) with the encoder proposals
classified by their classes, plus the denoising queries' losses under their known assignment."""

from __future__ import annotations

import torch

from d2ext.modeling.deformable_detr.criterion import SetCriterion, layer_suffixes, num_positives

from .denoising import DenoisingQueries

__all__ = ["DINOCriterion"]


class DINOCriterion(SetCriterion):
    """Hungarian set losses on the matching queries of every decoder layer and on the selected
    encoder proposals (with their classes), and the denoising losses: every denoising query is
    supervised by the box it was made from (positives) or as background (negatives and free
    slots), with no matching; the same three weights as the matching losses on every layer, keys
    ``<loss><layer suffix>_dn``, normalised by boxes x groups.

    Args:
        kwargs: :class:`SetCriterion`'s arguments (``class_agnostic_proposals`` defaults to
            False here).
    """

    def __init__(self, *, class_agnostic_proposals: bool = False, **kwargs):
        super().__init__(class_agnostic_proposals=class_agnostic_proposals, **kwargs)

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
