"""DINO's contrastive denoising (CDN): noised copies of the ground truth as extra decoder queries,
positives to be reconstructed and negatives to be rejected, in groups that cannot see each other.

Per image the denoising part of the query sequence is laid out as the authors' (DINO's
``prepare_for_cdn``, mmdetection's ``CdnQueryGenerator``)::

    [g0 pos (max_gt) | g0 neg (max_gt) | g1 pos | g1 neg | ...] + the matching queries

with ``max_gt`` the most ground-truth boxes of any image in the batch; the slots an image with
fewer boxes leaves free are zero (content 0, box (0.5, 0.5, 0.5, 0.5)) and are trained as
background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import box_convert

from d2ext.modeling.deformable_detr.position_encoding import inverse_sigmoid

__all__ = ["ContrastiveDenoising", "DenoisingQueries", "dn_attention_mask"]


def dn_attention_mask(
    max_gt: int, num_groups: int, num_queries: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The decoder self-attention mask of a batch with denoising queries.

    Args:
        max_gt: the most ground-truth boxes of any image in the batch (each group holds
            ``max_gt`` positive and ``max_gt`` negative slots).
        num_groups: the number of denoising groups.
        num_queries: the number of matching queries, after the denoising ones.
        device: the mask's device.

    Returns:
        Tensor: [P + Q, P + Q] bool, P = 2 * max_gt * num_groups; True where query i may not
        attend to query j: matching queries see no denoising query, and a denoising group sees
        no other group (it sees itself and the matching queries).
    """
    group = 2 * max_gt
    pad = group * num_groups
    total = pad + num_queries
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    mask[pad:, :pad] = True
    for g in range(num_groups):
        start, end = g * group, (g + 1) * group
        mask[start:end, :start] = True
        mask[start:end, end:pad] = True
    return mask


@dataclass
class DenoisingQueries:
    """One batch's denoising queries and their known targets."""

    content: torch.Tensor  # (N, P, C) label embeddings of the noised labels, 0 in free slots
    ref: torch.Tensor  # (N, P, 4) noised boxes, normalised cxcywh (sigmoid space)
    attn_mask: torch.Tensor  # (P + Q, P + Q) bool, True = blocked
    labels: torch.Tensor  # (N, P) the true class at positives, background elsewhere
    target_boxes: torch.Tensor  # (N, P, 4) the true box at positives (zeros elsewhere)
    noised_labels: torch.Tensor  # (N, P) the labels embedded (-1 in free slots)
    num_groups: int
    max_gt: int
    num_pos: int  # positives of the batch: sum of boxes x groups

    @property
    def pad_size(self) -> int:
        """
        Returns:
            int: P, the number of denoising queries per image.
        """
        return self.ref.shape[1]


class ContrastiveDenoising(nn.Module):
    """Builds DINO's contrastive denoising queries from the ground truth (training only).

    Label noise: each denoising query (positive and negative) takes, with probability
    ``label_noise_ratio * 0.5``, a class drawn uniformly from all classes (possibly its own).
    Box noise: each corner coordinate of the (x0, y0, x1, y1) box moves by
    ``sign * r * box_noise_scale * (w or h) / 2`` with a random sign, r ~ U[0, 1) for positives
    and U[1, 2) for negatives; the box is clipped to [0, 1]. Groups: ``num_dn_queries // max_gt``
    (at least 1), each with one positive and one negative copy of every box.

    Args:
        num_classes: the number of foreground classes (rows of the label embedding).
        d_model: the query width.
        num_dn_queries: the positive denoising queries aimed at per image (DINO's ``dn_number``).
        label_noise_ratio: DINO's ``dn_label_noise_ratio``.
        box_noise_scale: DINO's ``dn_box_noise_scale``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        d_model: int,
        num_dn_queries: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
    ):
        super().__init__()
        if num_dn_queries < 1:
            raise ValueError(f"num_dn_queries must be >= 1, got {num_dn_queries}")
        if not 0.0 <= label_noise_ratio <= 2.0 or box_noise_scale < 0:
            raise ValueError(
                f"bad noise: label_noise_ratio {label_noise_ratio} (0..2), "
                f"box_noise_scale {box_noise_scale} (>= 0)"
            )
        self.num_classes, self.d_model = num_classes, d_model
        self.num_dn_queries = num_dn_queries
        self.label_noise_ratio, self.box_noise_scale = label_noise_ratio, box_noise_scale
        self.label_embed = nn.Embedding(num_classes, d_model)

    def num_groups(self, max_gt: int) -> int:
        """
        Args:
            max_gt: the most ground-truth boxes of any image in the batch.

        Returns:
            int: ``num_dn_queries // max_gt``, at least 1 (1 when ``max_gt`` is 0).
        """
        return max(self.num_dn_queries // max_gt, 1) if max_gt > 0 else 1

    def noise_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Each label replaced, with probability ``label_noise_ratio * 0.5``, by a uniform class.

        Args:
            labels: [M] class labels.

        Returns:
            Tensor: [M] the noised labels.
        """
        flip = torch.rand(labels.shape, device=labels.device) < self.label_noise_ratio * 0.5
        random = torch.randint_like(labels, 0, self.num_classes)
        return torch.where(flip, random, labels)

    def noise_boxes(self, boxes: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Corner noise of the positives (r in [0, 1)) and negatives (r in [1, 2)).

        Args:
            boxes: [M, 4] normalised cxcywh.
            negative: [M] bool, True for negative copies.

        Returns:
            Tensor: [M, 4] noised boxes, normalised cxcywh, corners clipped to [0, 1].
        """
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        sign = torch.randint(0, 2, xyxy.shape, device=boxes.device).to(boxes) * 2.0 - 1.0
        r = torch.rand_like(xyxy) + negative[:, None].to(xyxy)
        half = boxes[:, 2:].repeat(1, 2) * self.box_noise_scale / 2
        noised = (xyxy + sign * r * half).clamp(0.0, 1.0)
        return box_convert(noised, "xyxy", "cxcywh")

    def forward(self, targets: list[dict], num_queries: int) -> DenoisingQueries | None:
        """
        Args:
            targets: per image ``labels`` [G] and ``boxes`` [G, 4] (normalised cxcywh).
            num_queries: the number of matching queries (for the attention mask).

        Returns:
            DenoisingQueries, or None when no image of the batch has a box.
        """
        counts = [len(t["labels"]) for t in targets]
        max_gt = max(counts)
        if max_gt == 0:
            return None
        groups = self.num_groups(max_gt)
        n, pad = len(targets), 2 * max_gt * groups
        weight = self.label_embed.weight
        device = weight.device
        content = weight.new_zeros((n, pad, self.d_model))
        ref_unact = weight.new_zeros((n, pad, 4))
        labels = torch.full((n, pad), self.num_classes, dtype=torch.long, device=device)
        noised_labels = torch.full((n, pad), -1, dtype=torch.long, device=device)
        target_boxes = weight.new_zeros((n, pad, 4))
        for i, (t, c) in enumerate(zip(targets, counts)):
            if c == 0:
                continue
            # slot of copy (group g, kind k in {pos 0, neg 1}, box j) = g*2*max_gt + k*max_gt + j
            g = torch.arange(groups, device=device)[:, None, None]
            k = torch.arange(2, device=device)[None, :, None]
            j = torch.arange(c, device=device)[None, None, :]
            slots = (g * 2 * max_gt + k * max_gt + j).reshape(-1)
            negative = (k.expand(groups, 2, c) == 1).reshape(-1)
            gt_labels = t["labels"].to(device).repeat(2 * groups)
            gt_boxes = t["boxes"].to(weight).repeat(2 * groups, 1)
            lab = self.noise_labels(gt_labels)
            noised_labels[i, slots] = lab
            content[i, slots] = self.label_embed(lab)
            ref_unact[i, slots] = inverse_sigmoid(self.noise_boxes(gt_boxes, negative), eps=1e-3)
            pos = slots[~negative]
            labels[i, pos] = gt_labels[~negative]
            target_boxes[i, pos] = gt_boxes[~negative]
        return DenoisingQueries(
            content=content,
            ref=ref_unact.sigmoid(),
            attn_mask=dn_attention_mask(max_gt, groups, num_queries, device),
            labels=labels,
            target_boxes=target_boxes,
            noised_labels=noised_labels,
            num_groups=groups,
            max_gt=max_gt,
            num_pos=sum(counts) * groups,
        )
