"""AlignDet (Li et al., ICCV 2023): box-domain pretraining of every detector module."""

from .finetune import NormEvalResNet, aligndet_param_groups
from .loss import box_infonce
from .mapper import ALIGNDET_SCALES, AlignDetDatasetMapper, aligndet_view_augmentations
from .modeling import (
    ALIGNDET_TO_DETECTRON2,
    AlignDet,
    AlignDetDETR,
    AlignDetFCOS,
    AlignDetRCNN,
    AlignDetRetinaNet,
    AlignDetROIHeads,
)
from .rand_aug import RANDAUG_COLOUR_OPS, RandAugColour, aligndet_colour_augmentation
from .transfer import backbone_init_for_aligndet, extract_aligndet

__all__ = [
    "ALIGNDET_SCALES",
    "ALIGNDET_TO_DETECTRON2",
    "NormEvalResNet",
    "RANDAUG_COLOUR_OPS",
    "RandAugColour",
    "aligndet_colour_augmentation",
    "aligndet_param_groups",
    "AlignDet",
    "AlignDetDatasetMapper",
    "AlignDetDETR",
    "AlignDetFCOS",
    "AlignDetRCNN",
    "AlignDetROIHeads",
    "AlignDetRetinaNet",
    "aligndet_view_augmentations",
    "backbone_init_for_aligndet",
    "extract_aligndet",
    "box_infonce",
]
