"""imTED few-shot, stage 1: base training on COCO's 60 base classes, as the authors' base
training: everything trains, layer decay 0.75 over the encoder, drop path 0.2, 24 epochs
(lr x0.1 at epochs 18 and 22), their augmentation; evaluated on the base classes of val2017.

    python tools/train_net.py \
        --config-file projects/imTED/configs/imted_faster_rcnn_vit_b_fewshot_base.py \
        train.init_checkpoint=imted_vit_b.pth
"""

from d2ext.projects.imted.builders import imted_model, imted_optimizer
from d2ext.solver.scaling import epochs_to_iters

from .imted_faster_rcnn_vit_b_3x_coco import dataloader, lr_multiplier, train

model = imted_model("B", num_classes=60)
optimizer = imted_optimizer(num_layers=12)

dataloader.train.dataset.names = "coco_2017_train_base"
dataloader.test.dataset.names = "coco_2017_val_base"
# 24 epochs counted over the 117,266 train2017 images with annotations: the base split drops
# the images whose objects are all novel, so this is at least 24 passes over it
train.max_iter = epochs_to_iters(24, 117266, 16)  # 175,899
lr_multiplier.steps = (18 / 24, 22 / 24)
train.output_dir = "output/imted_faster_rcnn_vit_b_fewshot_base"
