"""AlignDet checkpoint -> detector checkpoint for fine-tuning."""

import torch

from d2ext.checkpoint.convert import ConversionReport, convert_checkpoint

from .modeling import ALIGNDET_TO_DETECTRON2

__all__ = ["extract_aligndet", "backbone_init_for_aligndet"]


def extract_aligndet(
    checkpoint, keep_predictors: bool = False, **convert_kwargs
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """The online detector of an AlignDet checkpoint under detectron2's names: backbone, neck and
    heads kept; the projectors (they replaced the classifiers) and the momentum detector never
    kept; the final classification and regression layers (R-CNN ``box_predictor``, RetinaNet /
    FCOS ``cls_score``, ``bbox_pred``, ``ctrness``; Deformable DETR every ``class_embed`` and the
    last linear layer of every ``bbox_embed``) dropped unless ``keep_predictors``. The RPN
    is kept whole: its objectness and deltas are class-agnostic, the task they were trained on.

    Args:
        checkpoint: the AlignDet model's state dict, its checkpoint or checkpoint file.
        keep_predictors: keep the final classification / regression layers.
        convert_kwargs: passed to :func:`d2ext.checkpoint.convert_checkpoint` (``model``,
            ``dst``, ``fail_on``...).

    Returns:
        (detector state dict, report).
    """
    return convert_checkpoint(
        checkpoint,
        ALIGNDET_TO_DETECTRON2,
        keep_predictors=keep_predictors,
        drop_source=(".projector.",),
        **convert_kwargs,
    )


def backbone_init_for_aligndet(
    detector_state: dict[str, torch.Tensor], prefix: str = "backbone.bottom_up."
) -> dict[str, torch.Tensor]:
    """A detector's pretrained bottom-up backbone placed in both detectors of an AlignDet model
    (``online.`` and ``target.``), the form ``train.init_checkpoint`` of a pretraining config
    loads; everything else starts random."""
    out = {}
    for key, value in detector_state.items():
        if key.startswith(prefix):
            out["online." + key] = value
            out["target." + key] = value
    if not out:
        raise ValueError(
            f"no key starts with {prefix!r}; keys look like {sorted(detector_state)[:5]}"
        )
    return out
