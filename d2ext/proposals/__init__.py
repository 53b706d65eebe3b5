"""Selective-search proposals for the pretraining papers (SoCo, AlignDet)."""

from .backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    ProposalInputError,
    load_image_rgb,
    selective_search_fast,
    selective_search_reference,
)
from .cache import (
    BOX_CONVENTIONS,
    CacheLockedError,
    CacheSettingsError,
    DuplicateKeyError,
    ProposalCache,
    ProposalWriter,
    box_convention,
    convert_box_convention,
    read_box_convention,
)
from .convert import DatasetProposals, cache_to_coco, cache_to_soco, coco_to_cache, soco_to_cache
from .filters import ALIGNDET_FILTER, FILTERS, SOCO_FILTER, ProposalFilter, filter_from_name
from .generate import (
    GenerationSummary,
    WorkerDiedError,
    check_unique_keys,
    dataset_items,
    generate_proposals,
    shard_items,
)

__all__ = [
    "ALIGNDET_FILTER",
    "BACKENDS",
    "BOX_CONVENTIONS",
    "box_convention",
    "convert_box_convention",
    "read_box_convention",
    "CacheLockedError",
    "CacheSettingsError",
    "DuplicateKeyError",
    "WorkerDiedError",
    "check_unique_keys",
    "DEFAULT_BACKEND",
    "DatasetProposals",
    "cache_to_coco",
    "cache_to_soco",
    "coco_to_cache",
    "soco_to_cache",
    "GenerationSummary",
    "dataset_items",
    "ProposalInputError",
    "generate_proposals",
    "load_image_rgb",
    "selective_search_fast",
    "selective_search_reference",
    "shard_items",
    "FILTERS",
    "SOCO_FILTER",
    "ProposalCache",
    "ProposalFilter",
    "ProposalWriter",
    "filter_from_name",
]
