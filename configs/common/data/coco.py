"""COCO 2017 detection data, as detectron2 registers it under $DETECTRON2_DATASETS/coco."""

from detectron2.model_zoo import get_config

dataloader = get_config("common/data/coco.py").dataloader
