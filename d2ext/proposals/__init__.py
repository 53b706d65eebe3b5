"""Selective-search proposals for the pretraining papers (SoCo, AlignDet)."""

from .cache import ProposalCache, ProposalWriter
from .filters import ALIGNDET_FILTER, FILTERS, SOCO_FILTER, ProposalFilter, filter_from_name

__all__ = [
    "ALIGNDET_FILTER",
    "FILTERS",
    "SOCO_FILTER",
    "ProposalCache",
    "ProposalFilter",
    "ProposalWriter",
    "filter_from_name",
]
