"""Checkpointing and checkpoint converters."""

from .checkpointer import D2extCheckpointer

__all__ = ["D2extCheckpointer"]
