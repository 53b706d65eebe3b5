"""imTED Faster R-CNN with ViT-L (24 blocks, decoder 8 x 512), COCO 3x."""

from d2ext.projects.imted.builders import imted_model, imted_optimizer

from .imted_faster_rcnn_vit_b_3x_coco import dataloader, lr_multiplier, train

model = imted_model("L")  # drop path 0.3, pyramid from block 11 (the authors')
optimizer = imted_optimizer(num_layers=24)
train.output_dir = "output/imted_faster_rcnn_vit_l_3x_coco"
