"""Co-DETR (Zong et al., ICCV 2023): collaborative hybrid assignment training on the two-stage
Deformable DETR of ``d2ext.modeling.deformable_detr``.

Training adds, on top of the base detector's one-to-one (Hungarian) losses:
- a multi-scale adapter: the encoder memory reshaped back to per-level maps plus one extra
  Conv3x3 stride 2 + GroupNorm(32) level;
- auxiliary one-to-many heads on the adapter output: a Faster R-CNN (detectron2's RPN and ROI
  heads, GIoU box loss) and an ATSS head, every loss times ``aux_loss_scale`` (lambda2 x decoder
  layers = 12 by default); head index 0 is the R-CNN, 1 the ATSS head, as the authors';
- customized positive queries: each auxiliary head's positives (sampled proposals for the
  R-CNN, anchors for ATSS; at most ``max_positive_queries`` per image, at least
  ``min_positive_queries`` queries, padded with negatives to the batch maximum) become extra
  decoder queries, decoded by the shared decoder in their own group and supervised by the head's
  own assignment (no Hungarian matching), every layer's DETR losses x lambda1. A query of head k
  is (the authors' ``CoDeformableDetrTransformer.forward_aux``)
  ``[query_pos, content] = LN_k(Linear_k(sine(box)))`` and, with ``with_coord_feat``,
  ``content += LN_k(Linear_k(f))`` (f: the adapter feature at the anchor for ATSS, the RoI
  feature averaged over its 7x7 bins for the R-CNN) and ``query_pos += head_pos_embed[k]``;
  reference points = the boxes.

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
from d2ext.modeling.deformable_detr.position_encoding import inverse_sigmoid

__all__ = [
    "AUXILIARY_PREFIXES",
    "CoDeformableDETR",
    "CoStandardROIHeads",
    "MultiScaleAdapter",
    "build_positive_queries",
    "octave_anchor_sizes",
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
    "pos_feats_trans.",
    "pos_feats_norm.",
    "head_pos_embed.",
)


def octave_anchor_sizes(
    strides: list[int], octave_base_scale: float = 4.0, scales_per_octave: int = 3
) -> list[list[float]]:
    """mmdetection's ``AnchorGenerator(octave_base_scale, scales_per_octave)`` sizes as
    detectron2's ``DefaultAnchorGenerator(sizes=)``: per level,
    ``octave_base_scale * 2**(k / scales_per_octave) * stride`` for k = 0 .. scales_per_octave-1.

    Args:
        strides: the levels' strides.
        octave_base_scale: the size of the first scale in strides.
        scales_per_octave: scales per level.

    Returns:
        one list of ``scales_per_octave`` sizes (pixels) per level.
    """
    return [
        [octave_base_scale * 2 ** (k / scales_per_octave) * s for k in range(scales_per_octave)]
        for s in strides
    ]


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
        """
        Returns:
            dict[str, ShapeSpec]: per level ``p{log2(stride)}``, its channels and stride.
        """
        return {
            f"p{int(s).bit_length() - 1}": ShapeSpec(channels=self.channels, stride=s)
            for s in self.strides
        }

    def forward(self, enc: EncoderOutput) -> dict[str, torch.Tensor]:
        """
        Args:
            enc: the encoder's output.

        Returns:
            dict[str, Tensor]: the memory as per-level maps [N, C, H_l, W_l], plus the extra level
            downsampled from the coarsest, named as in :meth:`output_shape`.
        """
        maps = enc.level_maps()
        maps.append(self.downsample(maps[-1]))
        return dict(zip(self.output_shape(), maps))


class CoStandardROIHeads(StandardROIHeads):
    """detectron2's ``StandardROIHeads`` that also hands back the sampled proposals (with their
    ``gt_classes`` / ``gt_boxes`` and ``proposal_feats``, the pooled RoI feature averaged over its
    bins): the R-CNN branch's positives for Co-DETR."""

    def losses_and_samples(
        self, features: dict, proposals: list[Instances], targets: list[Instances]
    ) -> tuple[dict[str, torch.Tensor], list[Instances]]:
        """The box branch's training losses (``_forward_box``'s) and the sampled proposals.

        Args:
            features: the feature maps by name.
            proposals: the RPN's proposals per image.
            targets: per image ``gt_boxes`` / ``gt_classes``.

        Returns:
            the losses, and per image the sampled proposals with ``proposal_feats`` (R, C).
        """
        proposals = self.label_and_sample_proposals(proposals, targets)
        feats = [features[f] for f in self.box_in_features]
        pooled = self.box_pooler(feats, [x.proposal_boxes for x in proposals])  # (R, C, 7, 7)
        predictions = self.box_predictor(self.box_head(pooled))
        losses = self.box_predictor.losses(predictions, proposals)
        for p, f in zip(proposals, pooled.mean((2, 3)).split([len(p) for p in proposals])):
            p.proposal_feats = f
        return losses, proposals


def build_positive_queries(
    positives: list[dict[str, torch.Tensor]],
    image_sizes: list[tuple[int, int]],
    num_classes: int,
    max_per_image: int = 300,
    generator: torch.Generator | None = None,
    min_per_image: int = 9,
) -> dict[str, torch.Tensor] | None:
    """A batch of positive queries from one auxiliary head's assignment (the authors'
    ``get_aux_targets``): at most ``max_per_image`` positives per image (a random subset beyond
    that); every image padded with random negatives to M = max(``min_per_image``,
    min(``max_per_image``, the most positives of any image)).

    Args:
        positives: per image ``boxes`` (A, 4) xyxy pixels, ``labels`` (A,) (background
            ``num_classes``), ``target_boxes`` (A, 4), optionally ``feats`` (A, C).
        image_sizes: per image (h, w).
        num_classes: the background label.
        max_per_image: the cap on positives per image.
        generator: the random subsets' generator.
        min_per_image: the floor on M (the authors' 9); 0: no queries when no image has a
            positive.

    Returns:
        ``ref`` (N, M, 4) the boxes as normalised (cx, cy, w, h), not clipped (a box that
        crosses the border keeps its size; the decoder's inverse sigmoid clamps it),
        ``labels`` (N, M), ``target_boxes`` (N, M, 4) normalised cxcywh, ``num_pos``, and
        ``feats`` (N, M, C) when given (zeros for whole-image padding); None when M is 0.
    """
    chosen = []
    for p in positives:
        pos = (p["labels"] < num_classes).nonzero()[:, 0]
        if len(pos) > max_per_image:
            perm = torch.randperm(len(pos), generator=generator)[:max_per_image]
            pos = pos[perm.to(pos.device)]
        chosen.append(pos)
    m = max(max(len(c) for c in chosen), min_per_image)
    if m == 0:
        return None
    with_feats = "feats" in positives[0]
    refs, labels, targets, feats = [], [], [], []
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
        feat = p["feats"][idx] if with_feats else None
        if len(idx) < m:  # no negatives at all: pad with the whole image as background
            k = m - len(idx)
            box = torch.cat([box, box.new_tensor([[0.0, 0.0, 1.0, 1.0]]).expand(k, 4)])
            tgt = torch.cat([tgt, tgt.new_zeros(k, 4)])
            lab = torch.cat([lab, lab.new_full((k,), num_classes)])
            if with_feats:
                feat = torch.cat([feat, feat.new_zeros(k, feat.shape[1])])
        feats.append(feat)
        refs.append(box_convert(box, "xyxy", "cxcywh"))  # not clipped, as the authors
        targets.append(box_convert(tgt, "xyxy", "cxcywh"))
        labels.append(lab)
    out = {
        "ref": torch.stack(refs),
        "labels": torch.stack(labels),
        "target_boxes": torch.stack(targets),
        "num_pos": sum(len(c) for c in chosen),
    }
    if with_feats:
        out["feats"] = torch.stack(feats)
    return out


@META_ARCH_REGISTRY.register()
class CoDeformableDETR(DeformableDETR):
    """Co-DETR on the two-stage Deformable DETR: in training, the base detector's Hungarian losses
    plus the auxiliary one-to-many heads' losses (``aux_rcnn_*``, ``aux_atss_*``) and the
    positive queries' losses (``*_pos{head}``); at inference, ``DeformableDETR``'s forward.
    The arguments are listed in ``__init__``.
    """

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
        min_positive_queries: int = 9,
        with_coord_feat: bool = True,
        head_embed: str | None = "scalar",
        **kwargs,
    ):
        """
        Args:
            adapter: encoder memory -> the auxiliary heads' feature maps.
            atss_head: the ATSS branch (None: off).
            rpn: the R-CNN branch's RPN (None: off, with ``roi_heads``).
            roi_heads: the R-CNN branch's box head.
            lambda1: the positive queries' loss weight.
            lambda2: the auxiliary heads' loss weight.
            aux_loss_scale: the auxiliary losses' factor (None: lambda2 x decoder layers).
            max_positive_queries: the cap on positive queries per image and head.
            min_positive_queries: the floor on the positive-query group size (the authors' 9).
            with_coord_feat: add the feature at the positive (Linear + LayerNorm) to the
                content and the head embedding to the position of each positive query.
            head_embed: "scalar": one learned number per head added to every query_pos channel
                (the authors' ``nn.Embedding(num_co_heads, 1, ...)``, kept in their code to
                reproduce their results); "vector": one learned d_model vector per head; None:
                no head embedding (Co-DINO).
            kwargs: ``DeformableDETR``'s arguments.
        """
        super().__init__(**kwargs)
        if head_embed not in ("scalar", "vector", None):
            raise ValueError(f"head_embed must be 'scalar', 'vector' or None, got {head_embed!r}")
        if (rpn is None) != (roi_heads is None):
            raise ValueError("the R-CNN branch needs both rpn and roi_heads (or neither)")
        self.adapter, self.atss_head, self.rpn, self.roi_heads = adapter, atss_head, rpn, roi_heads
        self.lambda1 = lambda1
        n_dec = self.transformer.num_decoder_layers
        self.aux_loss_scale = lambda2 * n_dec if aux_loss_scale is None else aux_loss_scale
        self.max_positive_queries = max_positive_queries
        self.min_positive_queries = min_positive_queries
        self.with_coord_feat = with_coord_feat
        num_heads = int(atss_head is not None) + int(rpn is not None)
        d = self.transformer.d_model
        width = self.positive_query_parts * d
        self.aux_pos_trans = nn.ModuleList(nn.Linear(2 * d, width) for _ in range(num_heads))
        self.aux_pos_trans_norm = nn.ModuleList(nn.LayerNorm(width) for _ in range(num_heads))
        if with_coord_feat:
            c = adapter.channels
            self.pos_feats_trans = nn.ModuleList(nn.Linear(c, d) for _ in range(num_heads))
            self.pos_feats_norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(num_heads))
            if head_embed is not None:
                self.head_pos_embed = nn.Embedding(num_heads, 1 if head_embed == "scalar" else d)
        # these sit in the authors' transformer: its xavier pass (dim > 1) covers them
        for name, p in self.named_parameters():
            if p.dim() > 1 and name.startswith(("aux_pos_trans", "pos_feats", "head_pos_embed")):
                nn.init.xavier_uniform_(p)

    # aux_pos_trans maps a box's sine embedding to (query_pos, content): 2 x d_model wide
    positive_query_parts = 2

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
        if self.rpn is not None:  # head 0, as the authors' roi_head
            proposals, rpn_losses = self.rpn(images, feats, gt)
            roi_losses, sampled = self.roi_heads.losses_and_samples(feats, proposals, gt)
            losses.update({f"aux_rcnn_{k}": v for k, v in {**rpn_losses, **roi_losses}.items()})
            # every image keeps its first n sampled RoIs (positives come first), n the fewest
            # of the batch: the authors' max_proposal
            n = min(len(x) for x in sampled)
            sampled = [x[:n] for x in sampled]
            positives.append(
                [
                    {
                        "boxes": s.proposal_boxes.tensor,
                        "labels": s.gt_classes,
                        # an image without boxes samples background only: no gt_boxes
                        "target_boxes": (
                            s.gt_boxes if s.has("gt_boxes") else s.proposal_boxes
                        ).tensor,
                        "feats": s.proposal_feats,
                    }
                    for s in sampled
                ]
            )
        if self.atss_head is not None:
            maps = list(feats.values())
            atss_losses, pos = self.atss_head.losses(maps, gt)
            losses.update({f"aux_atss_{k}": v for k, v in atss_losses.items()})
            # one anchor per location: anchor a's feature is the adapter value at its location
            flat = torch.cat([x.flatten(2) for x in maps], 2).transpose(1, 2)  # (N, A, C)
            for p, f in zip(pos, flat):
                p["feats"] = f
            positives.append(pos)
        losses = {k: v * self.aux_loss_scale for k, v in losses.items()}
        return losses, positives

    def positive_query_embedding(
        self, head: int, q: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (query_pos, content) of head ``head``'s positive queries ``q``
        (``build_positive_queries``'s output), each (N, M, d_model)."""
        # the authors embed sigmoid(inverse_sigmoid(box)): the box clamped into (0, 1)
        query_pos, content = self.transformer.query_from_boxes(
            inverse_sigmoid(q["ref"]).sigmoid(),
            self.aux_pos_trans[head],
            self.aux_pos_trans_norm[head],
        )
        if self.with_coord_feat:
            content = content + self.pos_feats_norm[head](self.pos_feats_trans[head](q["feats"]))
            if hasattr(self, "head_pos_embed"):
                query_pos = query_pos + self.head_pos_embed.weight[head]
        return query_pos, content

    def positive_query_losses(
        self, images: ImageList, enc: EncoderOutput, positives: list[list[dict]]
    ) -> dict[str, torch.Tensor]:
        """Each head's positives decoded as their own query group, supervised one-to-many."""
        losses = {}
        suffixes = layer_suffixes(self.transformer.num_decoder_layers, two_stage=False)
        for h, pos in enumerate(positives):
            q = build_positive_queries(
                pos,
                images.image_sizes,
                self.num_classes,
                self.max_positive_queries,
                min_per_image=self.min_positive_queries,
            )
            if q is None:
                continue
            query_pos, content = self.positive_query_embedding(h, q)
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
        """
        Args:
            batched_inputs: detectron2's input dicts; in training each needs ``instances``.

        Returns:
            In training, dict[str, Tensor]: the Hungarian losses, the auxiliary heads' losses and
            the positive queries' losses. At inference, ``DeformableDETR.forward``'s output.
        """
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
