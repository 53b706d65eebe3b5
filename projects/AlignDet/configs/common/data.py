"""AlignDet's pretraining loader: unlabeled images + their proposals -> two views."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

from d2ext.data.transforms import random_colour_op
from d2ext.projects.aligndet import AlignDetDatasetMapper
from d2ext.proposals import DatasetProposals


def aligndet_loader(
    names, cache_dir, *, short_edge=(640, 800), max_size=1333, batch=16, max_proposals=None
):
    """Two views per image: multi-scale resize (short side in ``short_edge``), flip, one colour op;
    proposals from an AlignDet-filtered (ratio3size0008) cache keyed by image id."""
    return L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=names, filter_empty=False),
        mapper=L(AlignDetDatasetMapper)(
            proposals=L(DatasetProposals)(cache_dir=cache_dir, key="image_id"),
            augmentations=[
                L(T.ResizeShortestEdge)(
                    short_edge_length=tuple(short_edge), max_size=max_size, sample_style="range"
                ),
                L(T.RandomFlip)(horizontal=True),
                L(random_colour_op)(),
            ],
            max_proposals=max_proposals,
            image_format="BGR",
        ),
        total_batch_size=batch,
        aspect_ratio_grouping=False,
        num_workers=4,
    )
