"""The embedded demo data (d2ext.data.datasets.demo): CPU-sized loaders.

The 240-320 px images are read at short side 176-208 (test: 192), objects then measure about
15-90 px; this is what makes demo trainings fit minutes on two cores.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from omegaconf import OmegaConf

from d2ext.evaluation import COCOEvaluator

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="d2ext_demo_shapes_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(176, 192, 208), max_size=320, sample_style="choice"
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=False,
    ),
    total_batch_size=4,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="d2ext_demo_shapes_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=192, max_size=320)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=1,
)
# d2ext's COCOEvaluator: detectron2's, scored with faster-coco-eval when installed (pycocotools
# otherwise); it writes coco_instances_results.json under <train.output_dir>/inference, which
# tools/visualize_predictions.py draws
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}", output_dir="${...train.output_dir}/inference"
)
