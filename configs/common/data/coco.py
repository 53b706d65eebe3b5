"""COCO 2017 detection data, as detectron2 registers it under $DETECTRON2_DATASETS/coco."""

from detectron2.model_zoo import get_config

from d2ext.evaluation import COCOEvaluator

dataloader = get_config("common/data/coco.py").dataloader
# d2ext's COCOEvaluator (faster-coco-eval when installed), results json under the run's folder
dataloader.evaluator._target_ = COCOEvaluator
dataloader.evaluator.output_dir = "${...train.output_dir}/inference"
