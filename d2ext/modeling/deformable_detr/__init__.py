"""Two-stage Deformable DETR (box refinement, mixed query selection, look-forward-twice) as a
detectron2 meta-architecture; the base detector of Co-DETR and AlignDet's DETR."""

from .criterion import SetCriterion, decoder_loss_weights, layer_suffixes
from .detector import DeformableDETR
from .matcher import HungarianMatcher, focal_class_cost
from .ms_deform_attn import MSDeformAttn, multi_scale_deformable_attn
from .neck import ChannelMapper
from .position_encoding import PositionEmbeddingSine, box_sine_embedding, inverse_sigmoid
from .transformer import DeformableTransformer, EncoderOutput

__all__ = [
    "ChannelMapper",
    "DeformableDETR",
    "DeformableTransformer",
    "EncoderOutput",
    "HungarianMatcher",
    "MSDeformAttn",
    "PositionEmbeddingSine",
    "SetCriterion",
    "box_sine_embedding",
    "decoder_loss_weights",
    "focal_class_cost",
    "inverse_sigmoid",
    "layer_suffixes",
    "multi_scale_deformable_attn",
]
