"""AlignDet (Li et al., ICCV 2023): box-domain pretraining of every detector module."""

from .loss import box_infonce
from .mapper import AlignDetDatasetMapper, aligndet_view_augmentations
from .modeling import (
    ALIGNDET_TO_DETECTRON2,
    AlignDet,
    AlignDetDETR,
    AlignDetFCOS,
    AlignDetRCNN,
    AlignDetRetinaNet,
    AlignDetROIHeads,
)
from .transfer import backbone_init_for_aligndet, extract_aligndet

__all__ = [
    "ALIGNDET_TO_DETECTRON2",
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
