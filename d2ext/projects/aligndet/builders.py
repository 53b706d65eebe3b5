"""Config builders for AlignDet: the pretraining loader, and the pretraining model around any
supported detector block, one recipe per detector family chosen by the block's class.

Every function returns LazyConfig nodes (``LazyCall``), to use in a config file.
"""

from collections.abc import Callable

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.modeling import FCOS, GeneralizedRCNN, RetinaNet
from detectron2.utils.registry import locate

from ...data.transforms import random_colour_op
from ...modeling.deformable_detr import DeformableDETR
from ...proposals import DatasetProposals
from .mapper import AlignDetDatasetMapper
from .modeling import (
    AlignDet,
    AlignDetDETR,
    AlignDetFCOS,
    AlignDetRCNN,
    AlignDetRetinaNet,
    AlignDetROIHeads,
)

__all__ = [
    "ALIGNDET_RECIPES",
    "aligndet_detr_recipe",
    "aligndet_fcos_recipe",
    "aligndet_loader",
    "aligndet_model",
    "aligndet_rcnn_recipe",
    "aligndet_retinanet_recipe",
]


def aligndet_loader(
    names, cache_dir, *, short_edge=(640, 800), max_size=1333, batch=16, max_proposals=None
):
    """AlignDet's pretraining loader: unlabeled images and their proposals, two views per image.

    Args:
        names: detectron2 dataset name(s) of the images (labels unused).
        cache_dir: the proposal cache (AlignDet-filtered, ratio3size0008), keyed by image id.
        short_edge: (min, max) of the multi-scale resize's short side.
        max_size: the longest side after resizing.
        batch: total batch size (images).
        max_proposals: keep at most this many proposals per image (None: all).

    Returns:
        a LazyCall of ``build_detection_train_loader``: multi-scale resize, flip and one colour
        op per view (``AlignDetDatasetMapper``), no aspect-ratio grouping, 4 workers.
    """
    return L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=names, filter_empty=False),
        mapper=L(AlignDetDatasetMapper)(
            proposals=L(DatasetProposals)(cache_dir=cache_dir, key="image_id"),
            augmentations=[
                L(T.ResizeShortestEdge)(
                    short_edge_length=tuple(short_edge), max_size=max_size, sample_style="range"
                ),
                L(T.RandomFlip)(horizontal=True),
                L(random_colour_op)(),
            ],
            max_proposals=max_proposals,
            image_format="BGR",
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


def aligndet_rcnn_recipe(detector, *, roi_samples: int = 4096):
    """Faster R-CNN (``GeneralizedRCNN``) block -> AlignDet pretraining model, in place.

    Args:
        detector: the LazyCall of a ``GeneralizedRCNN`` with standard ROI heads.
        roi_samples: RoIs sampled per image, all positive when possible (authors: 4096).

    Returns:
        the LazyCall of ``AlignDet`` around ``AlignDetRCNN`` with one pseudo class.
    """
    detector._target_ = AlignDetRCNN
    detector.roi_heads._target_ = AlignDetROIHeads
    detector.roi_heads.update(
        num_classes=1, batch_size_per_image=roi_samples, positive_fraction=1.0
    )
    return _aligndet(detector)


def aligndet_retinanet_recipe(detector, *, num_samples: int = 2048):
    """RetinaNet block -> AlignDet pretraining model, in place.

    Args:
        detector: the LazyCall of a detectron2 ``RetinaNet``.
        num_samples: locations sampled per view for the contrastive loss (authors: 2048).

    Returns:
        the LazyCall of ``AlignDet`` around ``AlignDetRetinaNet`` with one pseudo class.
    """
    detector._target_ = AlignDetRetinaNet
    detector.num_classes = 1
    detector.num_samples = num_samples
    return _aligndet(detector)


def aligndet_fcos_recipe(detector, *, num_samples: int = 2048):
    """FCOS block -> AlignDet pretraining model, in place.

    Args:
        detector: the LazyCall of a detectron2 ``FCOS``.
        num_samples: locations sampled per view for the contrastive loss (authors: 2048).

    Returns:
        the LazyCall of ``AlignDet`` around ``AlignDetFCOS`` with one pseudo class.
    """
    detector._target_ = AlignDetFCOS
    detector.num_classes = 1
    detector.num_samples = num_samples
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
