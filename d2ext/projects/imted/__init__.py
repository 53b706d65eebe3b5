"""imTED (Zhang et al., ICCV 2023): the MAE encoder and decoder migrated into a two-stage
detector, with a multi-scale feature modulator."""

from .checkpoint import MAE_TO_IMTED, MAEMappingReport, mae_to_imted
from .mae import MAE, MAEDatasetMapper
from .modeling import (
    IMTEDBoxPooler,
    IMTEDFeaturePyramid,
    IMTEDROIHeads,
    IMTEDViT,
    LayerDecay,
    MAEDecoderHead,
    MultiScaleFeatureModulator,
    sincos_pos_embed_2d,
)

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
    "mae_to_imted",
    "sincos_pos_embed_2d",
]
