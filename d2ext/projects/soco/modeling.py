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

__all__ = ["SOCO_TO_DETECTRON2", "MLP", "SoCo", "byol_loss"]

# Prefix map of tools/convert_pretrain.py / d2ext.checkpoint.convert_state_dict from a SoCo
# checkpoint to a detectron2 Faster / Mask R-CNN with the same backbone and box head.
SOCO_TO_DETECTRON2 = (
    ("online.backbone.", "backbone."),
    ("online.box_head.", "roi_heads.box_head."),
)

# (online view, target view) pairs of the loss: SoCo's symmetrised (V1, V2) and (V1, V3).
SOCO_VIEW_PAIRS = ((0, 1), (1, 0), (0, 2), (2, 0))


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


class SoCo(nn.Module):
    """Object-level BYOL over the boxes of :class:`SoCoDatasetMapper`'s three views.

    Each view's batch goes through the backbone + FPN; each box is pooled (RoIAlign, 7x7,
    aligned) from the FPN level the mapper assigned to it in that view, then through the box
    head and the projector; the online branch adds the predictor. For each pair (a, b) of
    ``view_pairs`` the loss is the mean over boxes valid in both views of
    2 - 2 cos(predictor(online_a), projector_target(b)); the pairs are reported separately and
    summed by the trainer.

    Every forward in training mode first steps the target's EMA (:class:`MomentumSchedule`,
    m0 ``base_momentum`` raised to 1 over ``total_steps`` iterations on a cosine), so a
    forward in training mode must be followed by one optimizer step.

    Args:
        backbone: backbone + FPN (detectron2 ``Backbone``) of the online network.
        box_head: R-CNN box head (SoCo: 4conv1fc) on the pooled boxes.
        in_features: FPN levels the boxes are pooled from (P2-P5, SoCo's level rule).
        pooler_resolution, pooler_sampling_ratio, pooler_type: the RoI pooler's.
        projector_hidden_dim, out_dim, mlp_norm: projector and predictor MLPs.
        view_pairs: (online view, target view) pairs of the loss.
        pixel_mean, pixel_std: input normalisation.
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
        projector_hidden_dim: int = 4096,
        out_dim: int = 256,
        mlp_norm: str = "BN",
        view_pairs: Sequence[tuple[int, int]] = SOCO_VIEW_PAIRS,
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (57.375, 57.120, 58.395),
        base_momentum: float = 0.99,
        total_steps: int | None = None,
    ):
        super().__init__()
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"backbone has no feature {missing}; it has {sorted(shapes)}")
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
            level_rule="soco",
        )
        self.view_pairs = tuple(tuple(p) for p in view_pairs)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def momentum_update(self, momentum: float) -> None:
        """target = momentum * target + (1 - momentum) * online."""
        momentum_update(self.online, self.target, momentum)

    def _embed(self, net: nn.ModuleDict, images, boxes, levels) -> torch.Tensor:
        x = (images.to(self.device).float() - self.pixel_mean) / self.pixel_std
        # Pad bottom-right to the FPN's stride (112 px V3 views are not multiples of 32); the
        # boxes keep their coordinates.
        x = ImageList.from_tensors(list(x), net["backbone"].size_divisibility).tensor
        features = net["backbone"](x)
        pooled = self.pooler(
            [features[f] for f in self.in_features],
            [Boxes(b.to(self.device)) for b in boxes],
            level_assignments=torch.cat(levels).to(self.device),
        )
        return net["projector"](net["box_head"](pooled))

    def forward(self, batched_inputs: list[dict]):
        if not batched_inputs:
            raise ValueError("SoCo got an empty batch")
        if self.training:  # the EMA update that follows the previous optimizer step
            self.momentum_schedule.step(self.online, self.target)
        num_views = len(batched_inputs[0]["views"])
        online, target, valid = [], [], []
        for v in range(num_views):
            images = torch.stack([d["views"][v] for d in batched_inputs])
            boxes = [d["boxes"][v] for d in batched_inputs]
            levels = [d["levels"][v] for d in batched_inputs]
            online.append(self.predictor(self._embed(self.online, images, boxes, levels)))
            with torch.no_grad():
                target.append(self._embed(self.target, images, boxes, levels))
            valid.append(torch.cat(levels).to(self.device) >= 0)
        if not self.training:
            return {"online": online, "target": target, "valid": valid}
        losses = {}
        for a, b in self.view_pairs:
            both = valid[a] & valid[b]
            per_box = byol_loss(online[a], target[b])
            # No pair valid in the batch: a zero that keeps the graph (and DDP) intact.
            losses[f"loss_v{a + 1}_v{b + 1}"] = (
                per_box[both].mean() if both.any() else per_box.sum() * 0.0
            )
        return losses
