"""Model parts shared by two or more papers."""

from .poolers import ScaleAwareROIPooler

__all__ = ["ScaleAwareROIPooler"]
