"""Checkpointing and checkpoint converters."""

from .checkpointer import D2extCheckpointer
from .convert import (
    DEFAULT_PREDICTOR_PATTERNS,
    ConversionReport,
    compare_with_model,
    convert_state_dict,
    save_detectron2_checkpoint,
)
from .safe_load import UnsafeCheckpointError, load_checkpoint

__all__ = [
    "DEFAULT_PREDICTOR_PATTERNS",
    "ConversionReport",
    "D2extCheckpointer",
    "UnsafeCheckpointError",
    "compare_with_model",
    "convert_state_dict",
    "load_checkpoint",
    "save_detectron2_checkpoint",
]
