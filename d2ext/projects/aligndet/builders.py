"""Config builders for AlignDet: the pretraining loader, and the pretraining model around any
supported detector block, one recipe per detector family chosen by the block's class.

Every function returns LazyConfig nodes (``LazyCall``), to use in a config file.
"""

from collections.abc import Callable, Sequence

import detectron2.data.transforms as T
import torch
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.modeling import FCOS, GeneralizedRCNN, RetinaNet
from detectron2.utils.registry import locate

from ...modeling.deformable_detr import DeformableDETR
from ...proposals import DatasetProposals
from ...solver import with_gradient_clipping
from .finetune import NormEvalResNet, aligndet_param_groups
from .mapper import ALIGNDET_SCALES, AlignDetDatasetMapper
from .modeling import (
    AlignDet,
    AlignDetDETR,
    AlignDetFCOS,
    AlignDetRCNN,
    AlignDetRetinaNet,
    AlignDetROIHeads,
)
from .rand_aug import aligndet_colour_augmentation

__all__ = [
    "ALIGNDET_RECIPES",
    "aligndet_detr_recipe",
    "aligndet_fcos_recipe",
    "aligndet_finetune_optimizer",
    "aligndet_finetune_backbone",
    "aligndet_loader",
    "aligndet_model",
    "aligndet_rcnn_recipe",
    "aligndet_retinanet_recipe",
    "shared4conv1fc",
]


def aligndet_loader(
    names,
    cache_dir,
    *,
    short_edge: Sequence[int] = ALIGNDET_SCALES,
    sample_style: str = "choice",
    max_size: int = 1333,
    batch: int = 16,
    max_proposals: int | None = None,
    nms_iou: float | None = 0.5,
    image_format: str = "BGR",
):
    """AlignDet's pretraining loader: unlabeled images and their proposals, two views per image.

    Args:
        names: detectron2 dataset name(s) of the images (labels unused).
        cache_dir: the proposal cache (AlignDet-filtered, ratio3size0008), keyed by image id.
        short_edge: the resize's short sides (authors: 640, 672, ..., 800).
        sample_style: "choice" (one of ``short_edge``, the authors') or "range" (uniform in
            its [min, max]).
        max_size: the longest side after resizing.
        batch: total batch size (images).
        max_proposals: keep at most this many proposals per image (None: all).
        nms_iou: NMS over each image's proposals (see :class:`AlignDetDatasetMapper`).
        image_format: the detector's input format.

    Returns:
        a LazyCall of ``build_detection_train_loader``: per view a resize, flip 0.5 and one of
        the authors' nine RandAug colour operations (``AlignDetDatasetMapper``), no
        aspect-ratio grouping, 4 workers.
    """
    return L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=names, filter_empty=False),
        mapper=L(AlignDetDatasetMapper)(
            proposals=L(DatasetProposals)(cache_dir=cache_dir, key="image_id"),
            augmentations=[
                L(T.ResizeShortestEdge)(
                    short_edge_length=tuple(short_edge),
                    max_size=max_size,
                    sample_style=sample_style,
                ),
                L(T.RandomFlip)(horizontal=True),
                L(aligndet_colour_augmentation)(image_format="${...image_format}"),
            ],
            max_proposals=max_proposals,
            nms_iou=nms_iou,
            image_format=image_format,
        ),
        total_batch_size=batch,
        aspect_ratio_grouping=False,
        num_workers=4,
    )


def _aligndet(detector, **kwargs):
    # momentum detector: EMA 0.996 -> 1 (cosine) over the run, stepped by the model itself
    return L(AlignDet)(
        detector=detector,
        temperature=0.5,
        loss_weight=1.0,
        base_momentum=0.996,
        total_steps="${train.max_iter}",
        **kwargs,
    )


def shared4conv1fc(box_head):
    """An R-CNN box head block (detectron2 ``FastRCNNConvFCHead``) -> mmdet's
    ``Shared4Conv1FCBBoxHead``, in place: four 3x3 convs of 256 channels without norm, one fc of
    1024 (the authors' box head in pretraining and fine-tuning).

    Returns:
        the same LazyCall.
    """
    box_head.update(conv_dims=[256] * 4, fc_dims=[1024], conv_norm="")
    return box_head


def aligndet_rcnn_recipe(
    detector,
    *,
    roi_samples: int = 4096,
    positives_only: bool = True,
    rpn_samples: int = 4096,
    rpn_positive_fraction: float = 1.0,
):
    """Faster R-CNN (``GeneralizedRCNN``) block -> AlignDet pretraining model, in place.

    Args:
        detector: the LazyCall of a ``GeneralizedRCNN`` with standard ROI heads.
        roi_samples: at most this many foreground RoIs per image (authors: 4096).
        positives_only: RoIs are foreground only (authors); False fills ``roi_samples`` with
            background RoIs (detectron2's sampler).
        rpn_samples: anchors sampled per image by the RPN (authors: 4096).
        rpn_positive_fraction: their positive fraction (authors: 1.0; the RPN's background
            anchors fill the rest, as mmdet's sampler with ``neg_pos_ub=-1``).

    Returns:
        the LazyCall of ``AlignDet`` around ``AlignDetRCNN`` with one pseudo class.
    """
    detector._target_ = AlignDetRCNN
    detector.roi_heads._target_ = AlignDetROIHeads
    detector.roi_heads.update(
        num_classes=1,
        batch_size_per_image=roi_samples,
        positive_fraction=1.0,
        positives_only=positives_only,
    )
    detector.proposal_generator.update(
        batch_size_per_image=rpn_samples, positive_fraction=rpn_positive_fraction
    )
    return _aligndet(detector)


def aligndet_retinanet_recipe(detector, *, num_samples: int = 2048, sample_scope: str = "image"):
    """RetinaNet block -> AlignDet pretraining model, in place.

    Args:
        detector: the LazyCall of a detectron2 ``RetinaNet``.
        num_samples: anchors sampled for the contrastive loss (authors: 2048).
        sample_scope: "image" (authors: ``num_samples`` per image, mmdet ``AnchorHead``) or
            "batch" (over the process batch's anchors).

    Returns:
        the LazyCall of ``AlignDet`` around ``AlignDetRetinaNet`` with one pseudo class.
    """
    detector._target_ = AlignDetRetinaNet
    detector.update(num_classes=1, num_samples=num_samples, sample_scope=sample_scope)
    return _aligndet(detector)


def aligndet_fcos_recipe(
    detector,
    *,
    num_samples: int = 2048,
    sample_scope: str = "batch",
    box_loss: str = "aligndet",
    ctrness_on: str = "cls",
    center_sampling: bool = False,
):
    """FCOS block -> AlignDet pretraining model, in place; defaults are the authors' (mmdet
    FCOS head).

    Args:
        detector: the LazyCall of a detectron2 ``FCOS``.
        num_samples: locations sampled for the contrastive loss (authors: 2048).
        sample_scope: "batch" (authors: per process batch, all levels) or "image".
        box_loss: "aligndet" (-log IoU weighted by centerness, on the sampled positives) or
            "detectron2" (GIoU on all positives); see :class:`AlignDetFCOS`.
        ctrness_on: "cls" (authors) or "box" (detectron2) tower for the centerness.
        center_sampling: keep the block's centre sampling (detectron2: radius 1.5); False sets
            an infinite radius (authors: ``center_sampling=False``).

    Returns:
        the LazyCall of ``AlignDet`` around ``AlignDetFCOS`` with one pseudo class.
    """
    detector._target_ = AlignDetFCOS
    detector.update(
        num_classes=1,
        num_samples=num_samples,
        sample_scope=sample_scope,
        box_loss=box_loss,
        ctrness_on=ctrness_on,
    )
    if not center_sampling:
        detector.center_sampling_radius = float("inf")
    return _aligndet(detector)


def aligndet_detr_recipe(detector):
    """d2ext's two-stage Deformable DETR block -> AlignDet pretraining model, in place: one
    pseudo class, Hungarian matching on box costs only (L1 5, GIoU 2), query embeddings copied
    to the momentum detector instead of averaged.

    Args:
        detector: the LazyCall of ``d2ext.modeling.deformable_detr.DeformableDETR``.

    Returns:
        the LazyCall of ``AlignDet`` around ``AlignDetDETR``.
    """
    detector._target_ = AlignDetDETR
    detector.transformer.num_classes = 1
    detector.criterion.matcher.cost_class = 0.0
    return _aligndet(detector, copy_keys=("transformer.query_embed.weight",))


# detector class -> recipe (exact classes: a subclass would lose its own behaviour when the
# recipe swaps in the AlignDet class, so it needs an entry of its own)
ALIGNDET_RECIPES: dict[type, Callable] = {
    GeneralizedRCNN: aligndet_rcnn_recipe,
    RetinaNet: aligndet_retinanet_recipe,
    FCOS: aligndet_fcos_recipe,
    DeformableDETR: aligndet_detr_recipe,
}


def aligndet_model(detector, **options):
    """AlignDet pretraining model around a detector block, by the recipe of its class
    (:data:`ALIGNDET_RECIPES`).

    Args:
        detector: the LazyCall of a detectron2 ``GeneralizedRCNN``, ``RetinaNet`` or ``FCOS``,
            or of d2ext's ``DeformableDETR``; modified in place.
        options: the recipe's keyword options (``roi_samples`` for R-CNN, ``num_samples`` for
            RetinaNet and FCOS).

    Returns:
        the LazyCall of ``AlignDet``.

    Raises:
        ValueError: for a detector class that no recipe covers.
    """
    target = detector._target_
    cls = locate(target) if isinstance(target, str) else target
    recipe = ALIGNDET_RECIPES.get(cls)
    if recipe is None:
        supported = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in ALIGNDET_RECIPES)
        raise ValueError(
            f"AlignDet has no recipe for {target}; supported: {supported} "
            "(add one to d2ext.projects.aligndet.builders.ALIGNDET_RECIPES)"
        )
    return recipe(detector, **options)


def aligndet_finetune_backbone(bottom_up, *, norm: str = "SyncBN", freeze_at: int = 2):
    """A detectron2 ResNet block -> the authors' fine-tuning backbone, in place:
    :class:`NormEvalResNet` (batch norms in eval mode, affine trained), ``norm`` in the stem and
    stages (authors: SyncBN), stem and res2 frozen (``freeze_at=2``; mmdet
    ``frozen_stages=1``).

    Returns:
        the same LazyCall.
    """
    bottom_up._target_ = NormEvalResNet
    bottom_up.stem.norm = norm
    bottom_up.stages.norm = norm
    bottom_up.update(freeze_at=freeze_at, norm_eval=True)
    return bottom_up


def aligndet_finetune_optimizer(
    *,
    lr: float,
    weight_decay: float,
    bias_lr_mult: float = 1.0,
    bias_decay_mult: float = 1.0,
    clip_value: float | None = None,
):
    """The authors' fine-tuning SGD (momentum 0.9) as a LazyCall: mmcv's parameter groups
    (:func:`aligndet_param_groups`; weight decay on every parameter, norms included, unless a
    bias rule says otherwise), optionally clipped to a full-model L2 gradient norm of
    ``clip_value`` in ``step()`` (:func:`d2ext.solver.with_gradient_clipping`).

    Returns:
        a LazyCall whose ``params.model`` the training loop fills in.
    """
    params = L(aligndet_param_groups)(
        model=None,
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        bias_lr_mult=bias_lr_mult,
        bias_decay_mult=bias_decay_mult,
    )
    if clip_value is None:
        return L(torch.optim.SGD)(params=params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return L(with_gradient_clipping)(
        optimizer=torch.optim.SGD,
        params=params,
        lr=lr,
        momentum=0.9,
        weight_decay=weight_decay,
        clip_type="full_model",
        clip_value=clip_value,
        norm_type=2.0,
    )
