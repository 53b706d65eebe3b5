"""imTED (Liu et al., ICCV 2023): the MAE encoder and decoder migrated into a two-stage
detector, with a multi-scale feature modulator."""

from .checkpoint import MAE_TO_IMTED, MAEMappingReport, fewshot_init_from_base, mae_to_imted
from .mae import MAE, MAEDatasetMapper
from .modeling import (
    IMTEDBoxPooler,
    IMTEDFeaturePyramid,
    IMTEDROIHeads,
    IMTEDViT,
    LayerDecay,
    MAEDecoderHead,
    MultiScaleFeatureModulator,
    resize_pos_table,
    sincos_pos_embed_2d,
    sincos_pos_table,
)
from .optim import imted_param_groups, no_weight_decay

__all__ = [
    "MAE",
    "MAEDatasetMapper",
    "MAEMappingReport",
    "MAE_TO_IMTED",
    "IMTEDBoxPooler",
    "IMTEDFeaturePyramid",
    "IMTEDROIHeads",
    "IMTEDViT",
    "LayerDecay",
    "MAEDecoderHead",
    "MultiScaleFeatureModulator",
    "fewshot_init_from_base",
    "imted_param_groups",
    "mae_to_imted",
    "no_weight_decay",
    "resize_pos_table",
    "sincos_pos_embed_2d",
    "sincos_pos_table",
]
