"""Demo Co-DINO: dino_R18_demo.py (same detector, data, optimiser, iterations and test-time
top-100 selection) plus the demo Co-Deformable-DETR's adapter, ATSS and Faster R-CNN auxiliary
heads (co_deformable_detr_R18_demo.py: 128-d, strides 8-128, at most 100 positive queries) and
Co-DINO's positive queries (no feature term, no head embedding) and quality focal loss."""

from .co_deformable_detr_R18_demo import model as _codef
from .common.codino import model
from .dino_R18_demo import dataloader, lr_multiplier, optimizer, train
from .dino_R18_demo import model as _base

model.update({k: v for k, v in _base.items() if k != "_target_"})
for key in ("adapter", "atss_head", "rpn", "roi_heads", "max_positive_queries"):
    model[key] = _codef[key]
model.num_preselect = None
model.soft_nms_iou = None
train.output_dir = "output/co_dino_R18_demo"
model.criterion.class_loss = "quality_focal"  # Co-DINO's classification loss (DINO: focal)
