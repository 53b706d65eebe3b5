"""Checkpointing and checkpoint converters."""

from .checkpointer import D2extCheckpointer
from .convert import (
    DEFAULT_PREDICTOR_PATTERNS,
    ConversionReport,
    compare_with_model,
    convert_state_dict,
    save_detectron2_checkpoint,
)

__all__ = [
    "DEFAULT_PREDICTOR_PATTERNS",
    "ConversionReport",
    "D2extCheckpointer",
    "compare_with_model",
    "convert_state_dict",
    "save_detectron2_checkpoint",
]
