"""AlignDet's detectors and pretraining wrapper.

Each detector is a subclass of detectron2's (Faster R-CNN's ROI heads, RetinaNet, FCOS) that
adds ``align_forward(batched_inputs, with_losses)``: the detector runs as in training on the
pseudo boxes, with its own assigner and its own regression losses, and returns the projector
embeddings of its sampled training positions with the instance id each was assigned to (-1 for
background). The classification branch is replaced by the projector (the classifier's
parameters stay in the module, unused and frozen, so the detector remains a detectron2
detector). The backbone's bottom-up network (ResNet) is frozen: no gradient, BN in eval mode.

:class:`AlignDet` holds an online detector for view 1 and its momentum copy for view 2 and adds
the box-level InfoNCE to the online detector's regression losses.
"""

import torch
from detectron2.layers import cat
from detectron2.modeling import FCOS, GeneralizedRCNN, RetinaNet, StandardROIHeads
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import nn

from d2ext.modeling.deformable_detr import DeformableDETR
from d2ext.modeling.deformable_detr.criterion import num_positives
from d2ext.modeling.momentum import MomentumSchedule, make_target, momentum_update
from d2ext.utils.d2_compat import dense_box_regression_loss as _dense_box_regression_loss

from .loss import box_infonce

__all__ = [
    "ALIGNDET_TO_DETECTRON2",
    "FCOS_BOX_LOSSES",
    "SAMPLE_SCOPES",
    "AlignDet",
    "AlignDetDETR",
    "AlignDetFCOS",
    "AlignDetRCNN",
    "AlignDetROIHeads",
    "AlignDetRetinaNet",
]

# Prefix map of d2ext.checkpoint.convert_state_dict from an AlignDet checkpoint to the detector.
ALIGNDET_TO_DETECTRON2 = (("online.", ""),)


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


class _FrozenBottomUp:
    """Mixin: ``backbone.bottom_up`` frozen and kept in eval mode; the classifier unused."""

    def _freeze_for_alignment(self, classifier: nn.Module) -> None:
        bottom_up = getattr(self.backbone, "bottom_up", None)
        if bottom_up is None:
            raise ValueError(
                f"AlignDet freezes the backbone's bottom-up network; {type(self.backbone).__name__}"
                " has no `bottom_up` (use an FPN backbone)"
            )
        _freeze(bottom_up)
        _freeze(classifier)
        bottom_up.eval()

    def train(self, mode: bool = True):
        """Sets the training mode like ``nn.Module.train``, then puts ``backbone.bottom_up`` back in
        eval mode.

        Args:
            mode: training (True) or eval (False) mode.

        Returns:
            nn.Module: self.
        """
        super().train(mode)
        self.backbone.bottom_up.eval()
        return self


def _ids_of(instances: Instances, matched: torch.Tensor) -> torch.Tensor:
    """Instance id of each position's matched pseudo box, -1 where unmatched (< 0)."""
    if len(instances) == 0:
        return torch.full_like(matched, -1)
    ids = instances.gt_ids[matched.clamp(min=0)]
    return torch.where(matched >= 0, ids, torch.full_like(ids, -1))


# ---------------------------------------------------------------------------------- R-CNN


class AlignDetROIHeads(StandardROIHeads):
    """StandardROIHeads whose classifier is replaced by a projector on the box head's output
    (1024 -> 1024 -> 256 MLP); the box regression keeps detectron2's loss (class-agnostic:
    one pseudo class).

    Sampling: with ``positives_only`` (the authors' ``RandomSampler(num=4096, pos_fraction=1,
    neg_pos_ub=0)``) an image's RoIs are up to ``batch_size_per_image * positive_fraction`` of
    its foreground RoIs, drawn by detectron2's ``subsample_labels``, and no background RoI;
    an image without foreground RoI contributes none. Without it, detectron2's sampling: the
    rest up to ``batch_size_per_image`` is filled with background RoIs, which become InfoNCE
    negatives.

    Args:
        projector_hidden_dim: hidden width of the projector.
        projector_dim: embedding width.
        positives_only: sample foreground RoIs only (authors: True).
        kwargs: StandardROIHeads' arguments.
    """

    def __init__(
        self,
        *,
        projector_hidden_dim: int = 1024,
        projector_dim: int = 256,
        positives_only: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        width = self.box_head.output_shape.channels
        self.projector = nn.Sequential(
            nn.Linear(width, projector_hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(projector_hidden_dim, projector_dim),
        )
        self.positives_only = positives_only

    def _sample_proposals(self, matched_idxs, matched_labels, gt_classes):
        idxs, labels = super()._sample_proposals(matched_idxs, matched_labels, gt_classes)
        if not self.positives_only:
            return idxs, labels
        # subsample_labels puts the positives first; keep them only
        fg = (labels >= 0) & (labels < self.num_classes)
        return idxs[fg], labels[fg]

    def align(self, features, proposals, targets):
        """(embeddings [R, D], ids [R], {"loss_box_reg"}) over the sampled RoIs of all images."""
        proposals = self.label_and_sample_proposals(proposals, targets)
        x = self.box_pooler(
            [features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals]
        )
        x = self.box_head(x).flatten(1)
        gt_classes = cat([p.gt_classes for p in proposals])
        ids = cat(
            [p.gt_ids if p.has("gt_ids") else torch.full_like(p.gt_classes, -1) for p in proposals]
        )
        ids = torch.where(gt_classes < self.num_classes, ids, -1)  # background RoIs: -1
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = cat(
            [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals]
        )
        predictor = self.box_predictor
        loss = predictor.box_reg_loss(proposal_boxes, gt_boxes, predictor.bbox_pred(x), gt_classes)
        weight = predictor.loss_weight.get("loss_box_reg", 1.0)
        return self.projector(x), ids, {"loss_box_reg": loss * weight}


class AlignDetRCNN(_FrozenBottomUp, GeneralizedRCNN):
    """Faster R-CNN (detectron2's GeneralizedRCNN with :class:`AlignDetROIHeads`) for
    box-domain pretraining: RPN losses and the R-CNN box regression on the pseudo boxes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(self.roi_heads, AlignDetROIHeads):
            raise TypeError(f"AlignDetRCNN needs AlignDetROIHeads, got {type(self.roi_heads)}")
        self._freeze_for_alignment(self.roi_heads.box_predictor.cls_score)

    def align_forward(self, batched_inputs: list[dict], with_losses: bool = True):
        """Runs the RPN and :meth:`AlignDetROIHeads.align` on the pseudo boxes.

        Args:
            batched_inputs: detectron2's input dicts, each with ``instances`` (``gt_boxes``,
                ``gt_classes``, ``gt_ids``).
            with_losses: return the RPN and box-regression losses (else an empty dict; they are
                still computed).

        Returns:
            tuple[dict[str, Tensor], Tensor, Tensor]: the losses, the embeddings [R, D] of the
            sampled RoIs of all images and their instance ids [R] (-1 for background RoIs).
        """
        images = self.preprocess_image(batched_inputs)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, rpn_losses = self.proposal_generator(images, features, gt)
        emb, ids, roi_losses = self.roi_heads.align(features, proposals, gt)
        return ({**rpn_losses, **roi_losses} if with_losses else {}), emb, ids


# ---------------------------------------------------------------------------------- dense


SAMPLE_SCOPES = ("batch", "image")


class _AlignDense(_FrozenBottomUp):
    """Shared ``align_forward`` of RetinaNet and FCOS: head -> per-position embeddings and box
    predictions; the detector's own anchor assignment; its regression losses; ``num_samples``
    positions for the contrastive loss, positives first (detectron2's ``subsample_labels`` at
    positive fraction 1.0: up to ``num_samples`` matched positions, background positions fill
    the rest), drawn per image (``sample_scope="image"``) or over all positions of the
    process's batch (``"batch"``)."""

    num_samples: int
    sample_scope: str

    def _setup_alignment(self, projector: nn.Module, num_samples: int, sample_scope: str) -> None:
        if sample_scope not in SAMPLE_SCOPES:
            raise ValueError(f"sample_scope must be one of {SAMPLE_SCOPES}, got {sample_scope!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.head.projector = projector
        self.num_samples = num_samples
        self.sample_scope = sample_scope
        self._freeze_for_alignment(self.head.cls_score)

    def sample_positions(self, matched: torch.Tensor) -> torch.Tensor:
        """[N, R] bool mask of the positions drawn for the contrastive loss.

        Args:
            matched: [N, R] per position the index of its pseudo box, -1 background, -2
                ignored (never drawn).
        """
        # labels for the sampler: 0 = matched, 1 = background, -1 = ignored
        labels = torch.where(matched >= 0, 0, torch.where(matched == -1, 1, -1))
        mask = torch.zeros_like(matched, dtype=torch.bool)
        rows = [labels.flatten()] if self.sample_scope == "batch" else list(labels)
        flat = mask.view(len(rows), -1)
        for i, row in enumerate(rows):
            pos, neg = subsample_labels(row, self.num_samples, 1.0, 1)
            flat[i, pos] = True
            flat[i, neg] = True
        return mask

    def align_forward(self, batched_inputs: list[dict], with_losses: bool = True):
        """Runs the head with the projector, the detector's anchor matching and, with
        ``with_losses``, its regression losses; keeps the positions drawn by
        :meth:`sample_positions`.

        Args:
            batched_inputs: detectron2's input dicts, each with ``instances`` (``gt_boxes``,
                ``gt_classes``, ``gt_ids``).
            with_losses: compute the regression losses (else an empty dict).

        Returns:
            tuple[dict[str, Tensor], Tensor, Tensor]: the losses, the embeddings [M, D] of the
            drawn positions of all images and their instance ids [M] (-1 where unmatched).
        """
        images = self.preprocess_image(batched_inputs)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        emb, predictions = self._align_head(features)
        anchors = self.anchor_generator(features)
        matched = torch.stack([self._match(anchors, inst) for inst in gt])  # [N, R]
        sampled = self.sample_positions(matched)
        losses = (
            self._align_losses(anchors, predictions, list(matched), gt, sampled)
            if with_losses
            else {}
        )
        emb = cat(emb, dim=1)  # [N, R, D]
        ids = torch.stack([_ids_of(inst, m) for m, inst in zip(matched, gt)])
        return losses, emb[sampled], ids[sampled]

    def _regression_targets(self, matched, gt):
        pos_mask = torch.stack([m >= 0 for m in matched])
        gt_boxes = [
            inst.gt_boxes.tensor[m.clamp(min=0)]
            if len(inst)
            else torch.zeros(len(m), 4, device=m.device)
            for m, inst in zip(matched, gt)
        ]
        return pos_mask, gt_boxes


class AlignDetRetinaNet(_AlignDense, RetinaNet):
    """RetinaNet with the classification conv replaced by the projector
    Conv1x1-ReLU-Conv1x1(A x 256) on the classification subnet; anchors are assigned by the
    detector's own IoU matcher; its box regression loss (detectron2's type and beta) over all
    matched anchors. Contrastive samples: ``num_samples`` per image (the authors' mmdet
    ``AnchorHead`` samples per image)."""

    def __init__(
        self,
        *,
        projector_dim: int = 256,
        num_samples: int = 2048,
        sample_scope: str = "image",
        **kwargs,
    ):
        super().__init__(**kwargs)
        width = self.head.cls_score.in_channels
        num_anchors = self.head.cls_score.out_channels // self.num_classes
        self.projector_dim = projector_dim
        projector = nn.Sequential(
            nn.Conv2d(width, width, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_anchors * projector_dim, 1),
        )
        self._setup_alignment(projector, num_samples, sample_scope)

    def _align_head(self, features):
        emb, deltas = [], []
        for f in features:
            emb.append(
                permute_to_N_HWA_K(self.head.projector(self.head.cls_subnet(f)), self.projector_dim)
            )
            deltas.append(permute_to_N_HWA_K(self.head.bbox_pred(self.head.bbox_subnet(f)), 4))
        return emb, {"deltas": deltas}

    @torch.no_grad()
    def _match(self, anchors: list[Boxes], instances: Instances) -> torch.Tensor:
        """Per anchor: index of its pseudo box, -1 background, -2 ignored (IoU in between)."""
        iou = pairwise_iou(instances.gt_boxes, Boxes.cat(anchors))
        matched, labels = self.anchor_matcher(iou)
        if len(instances) == 0:
            return torch.full_like(matched, -1)
        matched = matched.clone()
        matched[labels == 0] = -1
        matched[labels == -1] = -2
        return matched

    def _align_losses(self, anchors, predictions, matched, gt, sampled):
        pos_mask, gt_boxes = self._regression_targets(matched, gt)
        normalizer = self._ema_update("loss_normalizer", max(int(pos_mask.sum()), 1), 100)
        loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            predictions["deltas"],
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_box_reg": loss / normalizer}


FCOS_BOX_LOSSES = ("aligndet", "detectron2")


class AlignDetFCOS(_AlignDense, FCOS):
    """FCOS with the classification conv replaced by the projector Conv3x3-ReLU-Conv1x1(256)
    on the classification subnet; locations are assigned by FCOS's own rule (scale ranges,
    smallest box; centre sampling by the detector's ``center_sampling_radius``, infinite for
    none).

    Losses, ``box_loss="aligndet"`` (the authors' mmdet FCOS head): over the **sampled**
    positive locations, -log IoU of the decoded box with its pseudo box (IoU clamped at 1e-6),
    weighted by the centerness target and divided by the sum of those weights, and the
    centerness BCE divided by their number. ``"detectron2"``: GIoU and centerness BCE over all
    positive locations, divided by detectron2's EMA of the positive count.

    Args:
        projector_dim: embedding width.
        num_samples: contrastive samples (authors: 2048 per GPU batch).
        sample_scope: "batch" (authors: over the batch's locations, all levels) or "image".
        box_loss: one of :data:`FCOS_BOX_LOSSES`.
        ctrness_on: "cls" (authors: centerness from the classification tower) or "box"
            (detectron2: from the box tower).
        kwargs: FCOS's arguments.
    """

    def __init__(
        self,
        *,
        projector_dim: int = 256,
        num_samples: int = 2048,
        sample_scope: str = "batch",
        box_loss: str = "aligndet",
        ctrness_on: str = "cls",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if box_loss not in FCOS_BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {FCOS_BOX_LOSSES}, got {box_loss!r}")
        if ctrness_on not in ("cls", "box"):
            raise ValueError(f"ctrness_on must be 'cls' or 'box', got {ctrness_on!r}")
        width = self.head.cls_score.in_channels
        self.projector_dim = projector_dim
        self.box_loss = box_loss
        self.ctrness_on = ctrness_on
        projector = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, projector_dim, 1),
        )
        self._setup_alignment(projector, num_samples, sample_scope)

    def _align_head(self, features):
        emb, deltas, ctr = [], [], []
        for f in features:
            cls_feature = self.head.cls_subnet(f)
            emb.append(permute_to_N_HWA_K(self.head.projector(cls_feature), self.projector_dim))
            box_feature = self.head.bbox_subnet(f)
            deltas.append(permute_to_N_HWA_K(self.head.bbox_pred(box_feature), 4))
            ctr_feature = cls_feature if self.ctrness_on == "cls" else box_feature
            ctr.append(permute_to_N_HWA_K(self.head.ctrness(ctr_feature), 1))
        return emb, {"deltas": deltas, "ctrness": ctr}

    @torch.no_grad()
    def _match(self, anchors: list[Boxes], instances: Instances) -> torch.Tensor:
        """Per location: index of its pseudo box (FCOS's rule), -1 background."""
        if len(instances) == 0:
            n = sum(len(a) for a in anchors)
            return torch.full((n,), -1, dtype=torch.int64, device=anchors[0].device)
        quality, matched = self._match_anchors(instances.gt_boxes, anchors).max(dim=0)
        matched[quality < 1e-5] = -1
        return matched

    def _align_losses(self, anchors, predictions, matched, gt, sampled):
        pos_mask, gt_boxes = self._regression_targets(matched, gt)
        ctr_targets = self.compute_ctrness_targets(anchors, gt_boxes)
        ctr = torch.cat(predictions["ctrness"], dim=1).squeeze(2)
        if self.box_loss == "detectron2":
            normalizer = self._ema_update("loss_normalizer", max(int(pos_mask.sum()), 1), 300)
            loss_loc = _dense_box_regression_loss(
                anchors,
                self.box2box_transform,
                predictions["deltas"],
                gt_boxes,
                pos_mask,
                box_reg_loss_type="giou",
            )
            loss_ctr = nn.functional.binary_cross_entropy_with_logits(
                ctr[pos_mask], ctr_targets[pos_mask], reduction="sum"
            )
            return {"loss_fcos_loc": loss_loc / normalizer, "loss_fcos_ctr": loss_ctr / normalizer}
        pos = pos_mask & sampled
        weight = ctr_targets[pos]
        all_anchors = Boxes.cat(anchors).tensor
        image_idx, anchor_idx = pos.nonzero(as_tuple=True)
        deltas = torch.cat(predictions["deltas"], dim=1)[pos]
        pred = self.box2box_transform.apply_deltas(deltas, all_anchors[anchor_idx])
        target = torch.stack(gt_boxes)[pos]
        iou = _aligned_iou(pred, target).clamp(min=1e-6)
        loss_loc = (-iou.log() * weight).sum() / weight.sum().clamp(min=1e-6)
        loss_ctr = nn.functional.binary_cross_entropy_with_logits(
            ctr[pos], weight, reduction="sum"
        ) / max(int(pos.sum()), 1)
        return {"loss_fcos_loc": loss_loc, "loss_fcos_ctr": loss_ctr}


def _aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] and b[i] (XYXY, continuous coordinates; mmdet's ``is_aligned`` overlaps)."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a + area_b - inter).clamp(min=1e-6)


# ---------------------------------------------------------------------------------- DETR


class AlignDetDETR(DeformableDETR):
    """The two-stage Deformable DETR of ``d2ext.modeling.deformable_detr`` for box-domain
    pretraining: the decoder's classifier is replaced by the projector Linear(256, 256)-ReLU-
    Linear(256, 256) on the last decoder layer's query features; each decoder layer is matched
    to the pseudo boxes by the detector's Hungarian matcher on box costs (L1 5, GIoU 2; give
    the matcher ``cost_class=0``) and trained with its L1 and GIoU losses. The encoder's
    class-agnostic proposal head keeps its loss (focal + boxes): it picks the queries. The
    ResNet (``backbone``) is frozen, BN in eval mode; the channel mapper trains. The InfoNCE
    samples are every query, with the id of the pseudo box the last layer matched (-1 for
    unmatched queries)."""

    def __init__(self, *, projector_dim: int = 256, **kwargs):
        super().__init__(**kwargs)
        d = self.transformer.d_model
        self.projector = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, projector_dim)
        )
        _freeze(self.backbone)
        for i in range(self.transformer.num_decoder_layers):  # the replaced classifiers
            _freeze(self.transformer.class_embed[i])
        self.backbone.eval()

    def train(self, mode: bool = True):
        """Sets the training mode like ``nn.Module.train``, then puts the frozen backbone back in
        eval mode.

        Args:
            mode: training (True) or eval (False) mode.

        Returns:
            AlignDetDETR: self.
        """
        super().train(mode)
        self.backbone.eval()
        return self

    def align_forward(self, batched_inputs: list[dict], with_losses: bool = True):
        """Encodes, selects the queries and decodes; matches each decoder layer to the pseudo boxes
        and projects the last layer's query features.

        Args:
            batched_inputs: detectron2's input dicts, each with ``instances`` (``gt_boxes``,
                ``gt_classes``, ``gt_ids``).
            with_losses: compute every layer's L1 and GIoU losses and the encoder proposals' losses
                (else an empty dict, and only the last layer is matched).

        Returns:
            tuple[dict[str, Tensor], Tensor, Tensor]: the losses, the embeddings [N * Q, D] of
            every query and the instance ids [N * Q] of the pseudo boxes the last layer matched
            them to (-1 for unmatched queries).
        """
        images = self.preprocess_image(batched_inputs)
        targets = self.prepare_targets(batched_inputs, images)
        enc, _ = self.encode(images)
        content, query_pos, ref = self.transformer.select_queries(enc)
        logits, boxes, hidden = self.transformer.decode(
            enc, content, query_pos, ref, return_hidden=True
        )
        crit = self.criterion
        losses = {}
        num_layers = logits.shape[0]
        suffixes = [f"_{i}" for i in range(num_layers - 1)] + [""]
        for i, suffix in enumerate(suffixes):
            if not with_losses and i < num_layers - 1:
                continue
            matches = crit.matcher(logits[i], boxes[i], targets)
            if with_losses:
                labels, tboxes = crit.hungarian_targets(logits[i], boxes[i], targets, matches)
                num_pos = num_positives(sum(len(t["labels"]) for t in targets), logits.device)
                terms = crit.dense_losses(logits[i], boxes[i], labels, tboxes, num_pos, suffix)
                losses.update({k: v for k, v in terms.items() if not k.startswith("loss_class")})
        n, q = boxes.shape[1:3]
        ids = torch.full((n, q), -1, dtype=torch.long, device=boxes.device)
        for b, (qi, ti) in enumerate(matches):  # the last layer's matching
            ids[b, qi] = targets[b]["ids"][ti]
        if with_losses:
            agnostic = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
            labels, tboxes = crit.hungarian_targets(enc.enc_logits, enc.enc_boxes, agnostic)
            num_pos = num_positives(sum(len(t["labels"]) for t in targets), logits.device)
            losses.update(
                crit.dense_losses(enc.enc_logits, enc.enc_boxes, labels, tboxes, num_pos, "_enc")
            )
        emb = self.projector(hidden[-1])
        return losses, emb.flatten(0, 1), ids.flatten()


# ---------------------------------------------------------------------------------- wrapper


class AlignDet(nn.Module):
    """Box-domain pretraining of a detector (Li et al., ICCV 2023).

    The online detector sees view 1 and is trained by its regression losses on the pseudo boxes
    plus the box-level InfoNCE (``loss_align``, weight ``loss_weight``); the momentum detector
    (an EMA copy) sees view 2 without gradient. Every forward in training mode first steps the
    momentum detector's EMA (:class:`MomentumSchedule`, m0 ``base_momentum`` raised to 1 over
    ``total_steps`` iterations on a cosine), so any training loop updates it; a forward in
    training mode must be followed by one optimizer step. Instance ids of
    :class:`AlignDetDatasetMapper` are offset per image so they are unique in the batch.

    Args:
        detector: an ``AlignDet*`` detector (any module with ``align_forward``).
        temperature: of the InfoNCE (0.5).
        loss_weight: of the InfoNCE.
        copy_keys: parameter names copied rather than averaged by the momentum update (DETR's
            query embeddings).
        base_momentum: m0 of the EMA (AlignDet: 0.996).
        total_steps: iterations of the run, K of the cosine (configs: ``"${train.max_iter}"``);
            needed to train.
    """

    def __init__(
        self,
        *,
        detector: nn.Module,
        temperature: float = 0.5,
        loss_weight: float = 1.0,
        copy_keys: tuple[str, ...] = (),
        base_momentum: float = 0.996,
        total_steps: int | None = None,
    ):
        super().__init__()
        if not hasattr(detector, "align_forward"):
            raise TypeError(
                f"{type(detector).__name__} has no align_forward; use an AlignDet* detector"
            )
        self.online = detector
        self.target = make_target(detector)
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.copy_keys = tuple(copy_keys)
        self.momentum_schedule = MomentumSchedule(base_momentum, total_steps, self.copy_keys)

    @property
    def device(self) -> torch.device:
        """
        Returns:
            torch.device: the online detector's device.
        """
        return self.online.device

    def momentum_update(self, momentum: float) -> None:
        """One EMA step of the momentum detector with a given momentum: target = momentum * target +
        (1 - momentum) * online per parameter; parameters matching ``copy_keys`` are copied.

        Args:
            momentum: the EMA momentum.
        """
        momentum_update(self.online, self.target, momentum, self.copy_keys)

    @staticmethod
    def _views(batched_inputs: list[dict], index: int) -> list[dict]:
        """View ``index`` of every image, with instance ids offset to be unique in the batch."""
        out, offset = [], 0
        for d in batched_inputs:
            view = dict(d["views"][index])
            inst = view["instances"]
            fields = dict(inst.get_fields())
            fields["gt_ids"] = fields["gt_ids"] + offset
            view["instances"] = Instances(inst.image_size, **fields)
            out.append(view)
            offset += int(d["num_ids"])
        return out

    def forward(self, batched_inputs: list[dict]):
        """In training mode, first steps the momentum detector's EMA; then the online detector runs
        ``align_forward`` on view 1 and the momentum detector (no gradient, no losses) on view 2.

        Args:
            batched_inputs: :class:`AlignDetDatasetMapper`'s dicts, each with ``views`` (two input
                dicts) and ``num_ids``.

        Returns:
            In training, dict[str, Tensor]: the online detector's losses plus ``loss_align`` (the
            box-level InfoNCE times ``loss_weight``). In eval mode, dict[str, Tensor]: ``queries``
            [M, D] and ``query_ids`` [M] of the online detector, ``keys`` [K, D] and ``key_ids``
            [K] of the momentum detector.
        """
        if not batched_inputs:
            raise ValueError("AlignDet got an empty batch")
        if self.training:  # the EMA update that follows the previous optimizer step
            self.momentum_schedule.step(self.online, self.target)
        losses, queries, query_ids = self.online.align_forward(self._views(batched_inputs, 0))
        with torch.no_grad():
            _, keys, key_ids = self.target.align_forward(
                self._views(batched_inputs, 1), with_losses=False
            )
        if not self.training:
            return {"queries": queries, "query_ids": query_ids, "keys": keys, "key_ids": key_ids}
        loss = box_infonce(queries, query_ids, keys, key_ids, self.temperature)
        losses["loss_align"] = loss * self.loss_weight
        return losses
