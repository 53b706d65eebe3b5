"""SoCo's pretraining network: backbone + FPN + box head, projector, predictor, target network.

The online network (``online.backbone``, ``online.box_head``, ``online.projector``) has the
detector's own modules, so its backbone and box head load into Faster / Mask R-CNN by renaming
two prefixes (see ``SOCO_TO_DETECTRON2``). The target network is an EMA copy of it that the
model updates itself at the start of every training forward (:class:`MomentumSchedule`), so any
training loop steps it.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import get_norm
from detectron2.modeling import Backbone
from detectron2.structures import Boxes, ImageList
from torch import nn

from d2ext.modeling.momentum import MomentumSchedule, make_target, momentum_update
from d2ext.modeling.poolers import ScaleAwareROIPooler

from .mapper import SOCO_BOX_LIST_VIEWS

__all__ = [
    "MLP",
    "SOCO_TO_DETECTRON2",
    "SOCO_VIEW_PAIRS",
    "SoCo",
    "byol_loss",
    "zero_init_last_norm",
]

# Prefix map of tools/convert_pretrain.py / d2ext.checkpoint.convert_state_dict from a SoCo
# checkpoint to a detectron2 Faster / Mask R-CNN with the same backbone and box head.
SOCO_TO_DETECTRON2 = (
    ("online.backbone.", "backbone."),
    ("online.box_head.", "roi_heads.box_head."),
)

# (online box list, target box list) pairs of the loss, indices into the mapper's four box
# lists (SOCO_BOX_LIST_VIEWS: V1 for (V1, V2), V2, V1 for (V1, V3), V3): SoCo's symmetrised
# (V1, V2) and (V1, V3).
SOCO_VIEW_PAIRS = ((0, 1), (1, 0), (2, 3), (3, 2))


class MLP(nn.Sequential):
    """Linear -> norm -> ReLU -> Linear: BYOL's projector and predictor."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, norm: str = "BN"):
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            _norm_1d(norm, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


def _norm_1d(norm: str, dim: int) -> nn.Module:
    """detectron2's norm names for [N, C] features (its "BN" is 2-d only)."""
    if norm == "BN":
        return nn.BatchNorm1d(dim)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(dim)
    return get_norm(norm, dim)


def byol_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(online, target) per row."""
    return 2.0 - 2.0 * F.cosine_similarity(online, target.detach(), dim=-1, eps=1e-12)


def zero_init_last_norm(backbone: nn.Module) -> int:
    """Sets the scale of the last norm of every detectron2 residual block to 0 (SoCo's ResNet,
    ``contrast/resnet.py:177-186``: ``bn3`` of a bottleneck, ``bn2`` of a basic block).

    Returns:
        the number of norms set.
    """
    from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock

    count = 0
    for m in backbone.modules():
        conv = (
            m.conv3
            if isinstance(m, BottleneckBlock)
            else m.conv2
            if isinstance(m, BasicBlock)
            else None
        )
        weight = getattr(getattr(conv, "norm", None), "weight", None)
        if isinstance(weight, nn.Parameter):
            with torch.no_grad():
                weight.zero_()
            count += 1
    return count


class SoCo(nn.Module):
    """Object-level BYOL over the box lists of :class:`SoCoDatasetMapper`'s three views.

    Each view's batch goes through the backbone + FPN. Each of the four box lists is pooled
    (RoIAlign 7x7, aligned) on its view's features; with ``pool_all_levels`` (the authors'
    ``contrast/models/SoCo_FPN.py:157-275``) every box is pooled from each of the levels of
    ``in_features`` and each level's boxes go through the box head, projector (and, online,
    the predictor) as their own batch, and a box's embedding is the one of the level the
    mapper assigned it; otherwise each box is pooled once, from its assigned level, and all go
    through the head as one batch. The level rule belongs to the mapper (``levels``); the
    pooler has none.

    For each pair (a, b) of ``view_pairs`` (indices into the box lists) a box of list a and
    a box of list b of the same image form a positive pair when they carry the same proposal
    ``ids`` and both have a level; duplicates form several pairs. The loss of the pair is
    2 - 2 cos(predictor(online_a), projector_target(b)), averaged per image over its pairs
    (an image without pairs gives 0) and then over the images of the batch
    (``loss_average="image"``, the authors'), or averaged over all pairs of the batch
    (``loss_average="pair"``). The pairs are reported separately and summed by the trainer.

    Every forward in training mode first steps the target's EMA (:class:`MomentumSchedule`,
    m0 ``base_momentum`` raised to 1 over ``total_steps`` iterations on a cosine), so a
    forward in training mode must be followed by one optimizer step.

    Args:
        backbone: backbone + FPN (detectron2 ``Backbone``) of the online network.
        box_head: R-CNN box head (SoCo: 4conv1fc) on the pooled boxes.
        in_features: FPN levels the boxes are pooled from (P2-P5); level j of the mapper is
            ``in_features[j]``.
        pooler_resolution, pooler_sampling_ratio, pooler_type: the RoI pooler's.
        pool_all_levels: pool every box at every level, one head batch per level (above).
        projector_hidden_dim, out_dim, mlp_norm: projector and predictor MLPs.
        view_pairs: (online box list, target box list) pairs of the loss.
        box_list_views: the view of each box list.
        loss_average: "image" or "pair" (above).
        zero_init_residual: set the last norm's scale of every residual block of the backbone
            to 0 (:func:`zero_init_last_norm`), as the authors' ResNet.
        pixel_mean, pixel_std: input normalisation, in the views' channel order (default:
            SoCo's RGB ImageNet mean / std on 0-255).
        base_momentum: m0 of the target's EMA (SoCo: 0.99).
        total_steps: iterations of the run, K of the cosine (configs: ``"${train.max_iter}"``);
            needed to train.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        box_head: nn.Module,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        pooler_resolution: int = 7,
        pooler_sampling_ratio: int = 0,
        pooler_type: str = "ROIAlignV2",
        pool_all_levels: bool = True,
        projector_hidden_dim: int = 4096,
        out_dim: int = 256,
        mlp_norm: str = "BN",
        view_pairs: Sequence[tuple[int, int]] = SOCO_VIEW_PAIRS,
        box_list_views: Sequence[int] = SOCO_BOX_LIST_VIEWS,
        loss_average: str = "image",
        zero_init_residual: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.280, 103.530),
        pixel_std: Sequence[float] = (58.395, 57.120, 57.375),
        base_momentum: float = 0.99,
        total_steps: int | None = None,
    ):
        super().__init__()
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"backbone has no feature {missing}; it has {sorted(shapes)}")
        if loss_average not in ("image", "pair"):
            raise ValueError(f"loss_average must be 'image' or 'pair', got {loss_average!r}")
        self.box_list_views = tuple(int(v) for v in box_list_views)
        self.view_pairs = tuple(tuple(p) for p in view_pairs)
        n_lists = len(self.box_list_views)
        if any(not 0 <= i < n_lists for p in self.view_pairs for i in p):
            raise ValueError(f"view_pairs {self.view_pairs} index past {n_lists} box lists")
        if zero_init_residual:
            zero_init_last_norm(backbone)
        head_dim = box_head.output_shape.channels
        self.online = nn.ModuleDict(
            {
                "backbone": backbone,
                "box_head": box_head,
                "projector": MLP(head_dim, projector_hidden_dim, out_dim, mlp_norm),
            }
        )
        self.predictor = MLP(out_dim, projector_hidden_dim, out_dim, mlp_norm)
        self.target = make_target(self.online)
        self.momentum_schedule = MomentumSchedule(base_momentum, total_steps)
        self.in_features = tuple(in_features)
        self.pooler = ScaleAwareROIPooler(
            output_size=pooler_resolution,
            scales=tuple(1.0 / shapes[f].stride for f in in_features),
            sampling_ratio=pooler_sampling_ratio,
            pooler_type=pooler_type,
            level_rule=None,  # the mapper assigns the levels
        )
        self.pool_all_levels = pool_all_levels
        self.loss_average = loss_average
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        """
        Returns:
            torch.device: the device of the model's buffers.
        """
        return self.pixel_mean.device

    def momentum_update(self, momentum: float) -> None:
        """target = momentum * target + (1 - momentum) * online."""
        momentum_update(self.online, self.target, momentum)

    def _features(self, net: nn.ModuleDict, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images.to(self.device).float() - self.pixel_mean) / self.pixel_std
        # Pad bottom-right to the FPN's stride (112 px V3 views are not multiples of 32); the
        # boxes keep their coordinates.
        x = ImageList.from_tensors(list(x), net["backbone"].size_divisibility).tensor
        features = net["backbone"](x)
        return [features[f] for f in self.in_features]

    def _embed(self, net, predictor, features, boxes, levels) -> torch.Tensor:
        """[M, out_dim] embeddings of the M boxes of ``boxes`` (one tensor per image)."""
        box_lists = [Boxes(b.to(self.device)) for b in boxes]

        def head(pooled):
            e = net["projector"](net["box_head"](pooled))
            return predictor(e) if predictor is not None else e

        if not self.pool_all_levels:
            return head(self.pooler(features, box_lists, level_assignments=levels))
        out = None
        for level in range(len(features)):
            at_level = torch.full_like(levels, level)
            e = head(self.pooler(features, box_lists, level_assignments=at_level))
            out = e if out is None else torch.where((levels == level)[:, None], e, out)
        return out

    def _pair_loss(self, q, k, ids_a, ids_b, valid_a, valid_b, img_a, img_b, num_images):
        """The loss of one (online list, target list) pair, as described in the class."""
        q = F.normalize(q, dim=1, eps=1e-12)
        k = F.normalize(k.detach(), dim=1, eps=1e-12)
        corr = (
            (img_a[:, None] == img_b[None, :])
            & (ids_a[:, None] == ids_b[None, :])
            & valid_a[:, None]
            & valid_b[None, :]
        ).to(q.dtype)
        per_row = (corr * (2.0 - 2.0 * q @ k.t())).sum(1)  # [M_a]
        if self.loss_average == "pair":
            return per_row.sum() / corr.sum().clamp(min=1.0)
        num = q.new_zeros(num_images).index_add(0, img_a, per_row)
        den = q.new_zeros(num_images).index_add(0, img_a, corr.sum(1))
        # SoCo's sum(sim * corr) / (sum(corr) + 1e-6) per image, then the mean over images.
        return (num / (den + 1e-6)).mean()

    def forward(self, batched_inputs: list[dict]):
        """In training mode, first steps the target network's EMA; then embeds every box list on the
        online network (with the predictor) and, without gradient, on the target network.

        Args:
            batched_inputs: :class:`SoCoDatasetMapper`'s dicts, each with ``views``, and per box
                list ``boxes``, ``ids`` and ``levels``.

        Returns:
            In training, dict[str, Tensor]: one loss per view pair, ``loss_v{a}_v{b}`` (with a
            ``_2``, ... suffix for repeated pairs). In eval mode, dict[str, list[Tensor]]: per box
            list, the ``online`` [M, D] and ``target`` [M, D] embeddings, ``valid`` [M] (the box has
            a level) and ``ids`` [M].

        Raises:
            ValueError: an empty batch, or an input whose ``boxes`` or ``ids`` do not hold one
                entry per box list.
        """
        if not batched_inputs:
            raise ValueError("SoCo got an empty batch")
        if self.training:  # the EMA update that follows the previous optimizer step
            self.momentum_schedule.step(self.online, self.target)
        n_lists = len(self.box_list_views)
        for d in batched_inputs:
            if len(d["boxes"]) != n_lists or len(d["ids"]) != n_lists:
                raise ValueError(
                    f"SoCo expects {n_lists} box lists with ids per image "
                    f"(views {self.box_list_views}), got {len(d['boxes'])} and "
                    f"{len(d.get('ids', []))}"
                )
        online, target, valid, ids, img = [], [], [], [], []
        for v in sorted(set(self.box_list_views)):
            images = torch.stack([d["views"][v] for d in batched_inputs])
            feats = self._features(self.online, images)
            with torch.no_grad():
                feats_t = self._features(self.target, images)
            for i in [i for i, view in enumerate(self.box_list_views) if view == v]:
                boxes = [d["boxes"][i] for d in batched_inputs]
                levels = torch.cat([d["levels"][i] for d in batched_inputs]).to(self.device)
                online.append((i, self._embed(self.online, self.predictor, feats, boxes, levels)))
                with torch.no_grad():
                    target.append((i, self._embed(self.target, None, feats_t, boxes, levels)))
                valid.append((i, levels >= 0))
                ids.append((i, torch.cat([d["ids"][i] for d in batched_inputs]).to(self.device)))
                counts = torch.tensor([len(b) for b in boxes], device=self.device)
                img.append(
                    (
                        i,
                        torch.repeat_interleave(
                            torch.arange(len(boxes), device=self.device), counts
                        ),
                    )
                )
        online, target, valid, ids, img = (
            [x for _, x in sorted(lst, key=lambda t: t[0])]
            for lst in (online, target, valid, ids, img)
        )
        if not self.training:
            return {"online": online, "target": target, "valid": valid, "ids": ids}
        losses = {}
        names = {}
        for a, b in self.view_pairs:
            name = f"loss_v{self.box_list_views[a] + 1}_v{self.box_list_views[b] + 1}"
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = f"{name}_{names[name]}"
            losses[name] = self._pair_loss(
                online[a],
                target[b],
                ids[a],
                ids[b],
                valid[a],
                valid[b],
                img[a],
                img[b],
                len(batched_inputs),
            )
        return losses
