"""FCOS R50-FPN: detectron2's block (P6/P7 from P5, GN head)."""

from detectron2.model_zoo import get_config

model = get_config("common/models/fcos.py").model
