"""imTED Faster R-CNN with ViT-S (decoder 4 x 256), COCO 3x."""

from d2ext.projects.imted.builders import imted_model, imted_optimizer

from .imted_faster_rcnn_vit_b_3x_coco import dataloader, lr_multiplier, train

model = imted_model("S")
optimizer = imted_optimizer(num_layers=12)
train.output_dir = "output/imted_faster_rcnn_vit_s_3x_coco"
