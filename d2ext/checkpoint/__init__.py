"""Checkpointing, safe checkpoint loading and the one checkpoint converter."""

from .checkpointer import D2extCheckpointer
from .convert import (
    DEFAULT_PREDICTOR_PATTERNS,
    ConversionReport,
    Transformed,
    compare_with_model,
    convert_checkpoint,
    convert_state_dict,
    save_detectron2_checkpoint,
)
from .safe_load import UnsafeCheckpointError, load_checkpoint

__all__ = [
    "DEFAULT_PREDICTOR_PATTERNS",
    "ConversionReport",
    "D2extCheckpointer",
    "Transformed",
    "UnsafeCheckpointError",
    "compare_with_model",
    "convert_checkpoint",
    "convert_state_dict",
    "load_checkpoint",
    "save_detectron2_checkpoint",
]
