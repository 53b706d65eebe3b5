"""Co-DETR (Zong et al., ICCV 2023): collaborative hybrid assignment training on the two-stage
Deformable DETR of ``d2ext.modeling.deformable_detr``.

Training adds, on top of the base detector's one-to-one (Hungarian) losses:
- a multi-scale adapter: the encoder memory reshaped back to per-level maps plus one extra
  Conv3x3 stride 2 + GroupNorm(32) level;
- auxiliary one-to-many heads on the adapter output: an ATSS head and a Faster R-CNN
  (detectron2's RPN and ROI heads, GIoU box loss), every loss times ``aux_loss_scale``
  (lambda2 x decoder layers = 12 by default);
- customized positive queries: each auxiliary head's positives (anchors for ATSS, sampled
  proposals for the R-CNN; at most ``max_positive_queries`` per image, padded with negatives to
  the batch maximum) become extra decoder queries (box sine embedding -> Linear -> LayerNorm,
  reference points = the boxes), decoded by the shared decoder in their own group and supervised
  by the head's own assignment (no Hungarian matching), every layer's DETR losses x lambda1.

Inference is the base detector's ``forward``: neither auxiliary heads nor positive queries run.
``strip_auxiliary`` turns a Co-DETR state dict into a plain ``DeformableDETR`` one.
"""

from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.proposal_generator import RPN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torchvision.ops import box_convert

from d2ext.modeling.atss import ATSSHead
from d2ext.modeling.deformable_detr import DeformableDETR, EncoderOutput, layer_suffixes
from d2ext.modeling.deformable_detr.criterion import num_positives

__all__ = [
    "AUXILIARY_PREFIXES",
    "CoDeformableDETR",
    "CoStandardROIHeads",
    "MultiScaleAdapter",
    "build_positive_queries",
    "strip_auxiliary",
]

# Everything a Co-DETR checkpoint holds that its base detector does not.
AUXILIARY_PREFIXES = (
    "adapter.",
    "atss_head.",
    "rpn.",
    "roi_heads.",
    "aux_pos_trans.",
    "aux_pos_trans_norm.",
)


class MultiScaleAdapter(nn.Module):
    """Encoder memory -> per-level maps, plus Conv3x3 stride 2 + GroupNorm(32) on the coarsest."""

    def __init__(self, *, channels: int, strides: list[int], num_groups: int = 32):
        super().__init__()
        self.downsample = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.GroupNorm(num_groups, channels),
        )
        self.strides = list(strides) + [strides[-1] * 2]
        self.channels = channels

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            f"p{int(s).bit_length() - 1}": ShapeSpec(channels=self.channels, stride=s)
            for s in self.strides
        }

    def forward(self, enc: EncoderOutput) -> dict[str, torch.Tensor]:
        maps = enc.level_maps()
        maps.append(self.downsample(maps[-1]))
        return dict(zip(self.output_shape(), maps))


class CoStandardROIHeads(StandardROIHeads):
    """detectron2's ``StandardROIHeads`` that also hands back the sampled proposals (with their
    ``gt_classes`` / ``gt_boxes``): the R-CNN branch's positives for Co-DETR."""

    def losses_and_samples(
        self, features: dict, proposals: list[Instances], targets: list[Instances]
    ) -> tuple[dict[str, torch.Tensor], list[Instances]]:
        proposals = self.label_and_sample_proposals(proposals, targets)
        return self._forward_box(features, proposals), proposals


def build_positive_queries(
    positives: list[dict[str, torch.Tensor]],
    image_sizes: list[tuple[int, int]],
    num_classes: int,
    max_per_image: int = 300,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor] | None:
    """Per image ``boxes`` (A, 4) xyxy pixels, ``labels`` (A,) (background ``num_classes``),
    ``target_boxes`` (A, 4) -> a batch of positive queries: at most ``max_per_image`` positives
    per image (a random subset beyond that), padded with random negatives to the batch maximum
    M. Returns ``ref`` (N, M, 4) the boxes as normalised (cx, cy, w, h) clipped to the image,
    ``labels`` (N, M), ``target_boxes`` (N, M, 4) normalised cxcywh, ``num_pos``; None when no
    image has a positive."""
    chosen = []
    for p in positives:
        pos = (p["labels"] < num_classes).nonzero()[:, 0]
        if len(pos) > max_per_image:
            perm = torch.randperm(len(pos), generator=generator)[:max_per_image]
            pos = pos[perm.to(pos.device)]
        chosen.append(pos)
    m = max(len(c) for c in chosen)
    if m == 0:
        return None
    refs, labels, targets = [], [], []
    for p, pos, (h, w) in zip(positives, chosen, image_sizes):
        neg = (p["labels"] >= num_classes).nonzero()[:, 0]
        need = m - len(pos)
        if need and len(neg):
            pick = torch.randperm(len(neg), generator=generator)
            if len(neg) < need:  # too few negatives: draw them again
                pick = torch.randint(len(neg), (need,), generator=generator)
            idx = torch.cat([pos, neg[pick[:need].to(neg.device)]])
        else:
            idx = pos
        scale = p["boxes"].new_tensor([w, h, w, h])
        box = p["boxes"][idx] / scale
        tgt = p["target_boxes"][idx] / scale
        lab = p["labels"][idx]
        if len(idx) < m:  # no negatives at all: pad with the whole image as background
            k = m - len(idx)
            box = torch.cat([box, box.new_tensor([[0.0, 0.0, 1.0, 1.0]]).expand(k, 4)])
            tgt = torch.cat([tgt, tgt.new_zeros(k, 4)])
            lab = torch.cat([lab, lab.new_full((k,), num_classes)])
        refs.append(box_convert(box.clamp(0, 1), "xyxy", "cxcywh"))
        targets.append(box_convert(tgt, "xyxy", "cxcywh"))
        labels.append(lab)
    num_pos = sum(len(c) for c in chosen)
    return {
        "ref": torch.stack(refs),
        "labels": torch.stack(labels),
        "target_boxes": torch.stack(targets),
        "num_pos": num_pos,
    }


@META_ARCH_REGISTRY.register()
class CoDeformableDETR(DeformableDETR):
    def __init__(
        self,
        *,
        adapter: MultiScaleAdapter,
        atss_head: ATSSHead | None,
        rpn: RPN | None,
        roi_heads: CoStandardROIHeads | None,
        lambda1: float = 1.0,
        lambda2: float = 2.0,
        aux_loss_scale: float | None = None,
        max_positive_queries: int = 300,
        **kwargs,
    ):
        """``aux_loss_scale`` defaults to lambda2 x the number of decoder layers (12)."""
        super().__init__(**kwargs)
        if (rpn is None) != (roi_heads is None):
            raise ValueError("the R-CNN branch needs both rpn and roi_heads (or neither)")
        self.adapter, self.atss_head, self.rpn, self.roi_heads = adapter, atss_head, rpn, roi_heads
        self.lambda1 = lambda1
        n_dec = self.transformer.num_decoder_layers
        self.aux_loss_scale = lambda2 * n_dec if aux_loss_scale is None else aux_loss_scale
        self.max_positive_queries = max_positive_queries
        num_heads = int(atss_head is not None) + int(rpn is not None)
        d = self.transformer.d_model
        self.aux_pos_trans = nn.ModuleList(nn.Linear(2 * d, 2 * d) for _ in range(num_heads))
        self.aux_pos_trans_norm = nn.ModuleList(nn.LayerNorm(2 * d) for _ in range(num_heads))

    def _gt_instances(self, targets: list[dict]) -> list[Instances]:
        out = []
        for t in targets:
            inst = Instances(t["image_size"])
            inst.gt_boxes = Boxes(t["boxes_xyxy"])
            inst.gt_classes = t["labels"]
            out.append(inst)
        return out

    def auxiliary_losses(
        self, images: ImageList, enc: EncoderOutput, targets: list[dict]
    ) -> tuple[dict[str, torch.Tensor], list[list[dict]]]:
        """The one-to-many heads on the adapter output: their losses (scaled) and positives."""
        feats = self.adapter(enc)
        gt = self._gt_instances(targets)
        losses, positives = {}, []
        if self.atss_head is not None:
            atss_losses, pos = self.atss_head.losses(list(feats.values()), gt)
            losses.update({f"aux_atss_{k}": v for k, v in atss_losses.items()})
            positives.append(pos)
        if self.rpn is not None:
            proposals, rpn_losses = self.rpn(images, feats, gt)
            roi_losses, sampled = self.roi_heads.losses_and_samples(feats, proposals, gt)
            losses.update({f"aux_rcnn_{k}": v for k, v in {**rpn_losses, **roi_losses}.items()})
            positives.append(
                [
                    {
                        "boxes": s.proposal_boxes.tensor,
                        "labels": s.gt_classes,
                        "target_boxes": s.gt_boxes.tensor,
                    }
                    for s in sampled
                ]
            )
        losses = {k: v * self.aux_loss_scale for k, v in losses.items()}
        return losses, positives

    def positive_query_losses(
        self, images: ImageList, enc: EncoderOutput, positives: list[list[dict]]
    ) -> dict[str, torch.Tensor]:
        """Each head's positives decoded as their own query group, supervised one-to-many."""
        losses = {}
        suffixes = layer_suffixes(self.transformer.num_decoder_layers, two_stage=False)
        for h, pos in enumerate(positives):
            q = build_positive_queries(
                pos, images.image_sizes, self.num_classes, self.max_positive_queries
            )
            if q is None:
                continue
            query_pos, content = self.transformer.query_from_boxes(
                q["ref"], self.aux_pos_trans[h], self.aux_pos_trans_norm[h]
            )
            logits, boxes = self.transformer.decode(enc, content, query_pos, q["ref"])
            num_pos = num_positives(q["num_pos"], logits.device)
            for layer_logits, layer_boxes, suffix in zip(logits, boxes, suffixes):
                terms = self.criterion.dense_losses(
                    layer_logits,
                    layer_boxes,
                    q["labels"],
                    q["target_boxes"],
                    num_pos,
                    suffix,
                    scale=self.lambda1,
                )
                losses.update({f"{k}_pos{h}": v for k, v in terms.items()})
        return losses

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        targets = self.prepare_targets(batched_inputs, images)
        enc, _ = self.encode(images)
        losses = self.criterion(self.forward_queries(enc), targets)
        aux, positives = self.auxiliary_losses(images, enc, targets)
        losses.update(aux)
        losses.update(self.positive_query_losses(images, enc, positives))
        return losses


def strip_auxiliary(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Co-DETR state dict without the training-only modules: loads strictly into the
    ``DeformableDETR`` built from the same config minus the auxiliary parts."""
    return {k: v for k, v in state_dict.items() if not k.startswith(AUXILIARY_PREFIXES)}
