"""ATSS (Zhang et al., CVPR 2020): adaptive training sample selection and its head.

Detectron2 has neither. ``atss_assign`` is the authors' assigner (mmdetection's
``ATSSAssigner``): per ground-truth box the ``topk`` anchors closest by centre distance on every
level are candidates, the IoU threshold is the candidates' mean + std (unbiased), positives are
candidates at or above it whose centre lies inside the box (by more than 0.01 px), and an anchor
claimed by several boxes goes to the one it overlaps most. ``ATSSHead`` is the head (GN conv
towers, per-level learned scale, one square anchor per location) with focal, GIoU (weighted by
centerness targets) and centerness losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from d2ext.utils.dist import mean_over_workers

__all__ = ["ATSSHead", "Scale", "atss_assign", "centerness_targets"]


@torch.no_grad()
def atss_assign(
    anchors_per_level: list[torch.Tensor], gt_boxes: torch.Tensor, topk: int = 9
) -> torch.Tensor:
    """anchors_per_level: (A_l, 4) xyxy per level; gt_boxes (G, 4) xyxy. Returns (A,) the
    matched ground-truth index of each anchor (levels concatenated), -1 for background."""
    anchors = torch.cat(anchors_per_level, 0)
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    assigned = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return assigned
    overlaps = pairwise_iou(Boxes(anchors), Boxes(gt_boxes))  # (A, G)
    gt_c = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    an_c = (anchors[:, :2] + anchors[:, 2:]) / 2
    distances = torch.cdist(an_c, gt_c)  # (A, G)
    candidates, start = [], 0
    for level in anchors_per_level:
        k = min(topk, level.shape[0])
        _, idx = distances[start : start + level.shape[0]].topk(k, dim=0, largest=False)
        candidates.append(idx + start)
        start += level.shape[0]
    candidates = torch.cat(candidates, 0)  # (C, G)
    cand_iou = overlaps[candidates, torch.arange(num_gt, device=anchors.device)]
    std = cand_iou.std(0) if candidates.shape[0] > 1 else torch.zeros_like(cand_iou[0])
    is_pos = cand_iou >= cand_iou.mean(0) + std
    # the candidate's centre must lie inside its box
    cx, cy = an_c[candidates, 0], an_c[candidates, 1]  # (C, G)
    inside = (
        torch.stack(
            [cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy], 0
        ).min(0)[0]
        > 0.01
    )
    is_pos &= inside
    claimed = torch.full_like(overlaps, -math.inf)
    gt_idx = torch.arange(num_gt, device=anchors.device).expand_as(candidates)
    claimed[candidates[is_pos], gt_idx[is_pos]] = overlaps[candidates[is_pos], gt_idx[is_pos]]
    best, arg = claimed.max(1)
    assigned[best > -math.inf] = arg[best > -math.inf]
    return assigned


def centerness_targets(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of each anchor centre in its box."""
    c = (anchors[:, :2] + anchors[:, 2:]) / 2
    lr = torch.stack([c[:, 0] - gt_boxes[:, 0], gt_boxes[:, 2] - c[:, 0]], 1)
    tb = torch.stack([c[:, 1] - gt_boxes[:, 1], gt_boxes[:, 3] - c[:, 1]], 1)
    ratio = (lr.min(1)[0] / lr.max(1)[0]) * (tb.min(1)[0] / tb.max(1)[0])
    return ratio.clamp(min=0).sqrt()


class Scale(nn.Module):
    """A learnable scalar that multiplies its input.

    Args:
        value: the scalar's initial value.
    """

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: a tensor of any shape.

        Returns:
            Tensor: ``x`` times the scalar.
        """
        return x * self.scale


class ATSSHead(nn.Module):
    """ATSS head on a list of feature maps. ``losses`` also returns, per image, every anchor
    with its assigned label (background = ``num_classes``) and target box: what Co-DETR turns
    into positive queries."""

    def __init__(
        self,
        *,
        input_shape: list[ShapeSpec],
        num_classes: int,
        num_convs: int = 1,
        anchor_scale: float = 8.0,
        topk: int = 9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loss_weights: dict[str, float] | None = None,
        prior_prob: float = 0.01,
        num_groups: int = 32,
        box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
    ):
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"ATSSHead needs equal channels on every level, got {channels}")
        c = channels.pop()
        self.num_classes, self.topk = num_classes, topk
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.loss_weights = {"loss_cls": 1.0, "loss_bbox": 2.0, "loss_centerness": 1.0}
        self.loss_weights.update(loss_weights or {})
        strides = [s.stride for s in input_shape]
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[anchor_scale * s] for s in strides],
            aspect_ratios=[[1.0]],
            strides=strides,
            offset=0.0,
        )
        self.box2box = Box2BoxTransform(weights=box_weights)

        def tower():
            layers = []
            for _ in range(num_convs):
                layers += [
                    nn.Conv2d(c, c, 3, padding=1, bias=False),
                    nn.GroupNorm(num_groups, c),
                    nn.ReLU(),
                ]
            return nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls_logits = nn.Conv2d(c, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(c, 4, 3, padding=1)
        self.centerness = nn.Conv2d(c, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]):
        """
        Args:
            features: per level a [N, C, H_l, W_l] feature map.

        Returns:
            tuple[list[Tensor], list[Tensor], list[Tensor]]: per level, the class logits
            [N, num_classes, H_l, W_l], the box deltas [N, 4, H_l, W_l] (times the level's
            learnable scale) and the centerness logits [N, 1, H_l, W_l].
        """
        logits, deltas, ctr = [], [], []
        for x, scale in zip(features, self.scales):
            c, r = self.cls_tower(x), self.reg_tower(x)
            logits.append(self.cls_logits(c))
            deltas.append(scale(self.bbox_pred(r)))
            ctr.append(self.centerness(r))
        return logits, deltas, ctr

    def losses(
        self, features: list[torch.Tensor], targets: list[Instances]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        """targets: per image ``gt_boxes`` / ``gt_classes``. Returns the weighted losses and,
        per image, ``boxes`` (A, 4) anchors, ``labels`` (A,) and ``target_boxes`` (A, 4)."""
        logits, deltas, ctr = self(features)
        anchors = [a.tensor for a in self.anchor_generator(features)]
        all_anchors = torch.cat(anchors, 0)
        logits = cat([permute_to_N_HWA_K(x, self.num_classes) for x in logits], 1)
        deltas = cat([permute_to_N_HWA_K(x, 4) for x in deltas], 1)
        ctr = cat([permute_to_N_HWA_K(x, 1) for x in ctr], 1)[..., 0]
        labels, tboxes, positives = [], [], []
        for t in targets:
            gt = t.gt_boxes.tensor.to(all_anchors)
            idx = atss_assign(anchors, gt, self.topk)
            lab = torch.full_like(idx, self.num_classes)
            tb = torch.zeros_like(all_anchors)
            pos = idx >= 0
            lab[pos] = t.gt_classes.to(idx.device)[idx[pos]]
            tb[pos] = gt[idx[pos]]
            labels.append(lab)
            tboxes.append(tb)
            positives.append({"boxes": all_anchors, "labels": lab, "target_boxes": tb})
        labels, tboxes = torch.stack(labels), torch.stack(tboxes)
        pos = labels < self.num_classes
        num_pos = max(mean_over_workers(pos.sum().item(), logits.device), 1.0)
        onehot = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes].to(logits)
        loss_cls = (
            sigmoid_focal_loss(
                logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            )
            / num_pos
        )
        pos_anchors = all_anchors.expand(len(targets), -1, -1)[pos]
        ctr_t = centerness_targets(pos_anchors, tboxes[pos])
        pred = self.box2box.apply_deltas(deltas[pos], pos_anchors)
        ctr_sum = max(mean_over_workers(ctr_t.sum().item(), logits.device), 1e-6)
        loss_bbox = (generalized_box_iou_loss(pred, tboxes[pos]) * ctr_t).sum() / ctr_sum
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[pos], ctr_t, reduction="sum") / num_pos
        w = self.loss_weights
        losses = {
            "loss_cls": loss_cls * w["loss_cls"],
            "loss_bbox": loss_bbox * w["loss_bbox"],
            "loss_centerness": loss_ctr * w["loss_centerness"],
        }
        return losses, positives
