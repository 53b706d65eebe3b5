"""Co-Deformable-DETR R-50, 12 epochs on COCO (authors: 49.5 box AP): the base detector of
deformable_detr_R50_12ep_coco.py trained with the ATSS and Faster R-CNN auxiliary heads and their
positive queries. Evaluation runs the base detector only."""

from .common.codetr import model
from .deformable_detr_R50_12ep_coco import dataloader, lr_multiplier, optimizer, train

train.output_dir = "output/co_deformable_detr_R50_12ep_coco"
