"""imTED Mask R-CNN with ViT-B: the Faster R-CNN config plus detectron2's FCN mask head on the
pyramid (P2-P5, convs without norm, as the authors), COCO 3x."""

from d2ext.projects.imted.builders import imted_model

from .imted_faster_rcnn_vit_b_3x_coco import dataloader, lr_multiplier, optimizer, train

model = imted_model("B", mask=True)
dataloader.train.mapper.use_instance_mask = True
dataloader.evaluator.tasks = ("bbox", "segm")
train.output_dir = "output/imted_mask_rcnn_vit_b_3x_coco"
