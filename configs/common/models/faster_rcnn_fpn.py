"""Faster R-CNN R50-FPN: detectron2's Mask R-CNN FPN block without the mask branch."""

from detectron2.model_zoo import get_config

model = get_config("common/models/mask_rcnn_fpn.py").model
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
