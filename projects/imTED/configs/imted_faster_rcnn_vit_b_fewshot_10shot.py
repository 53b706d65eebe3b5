"""imTED few-shot, stage 2: fine-tune on a k-shot split of all 80 classes (default 10-shot,
seed 0; any ``coco_2017_train_{k}shot_seed{s}``) from the base model, as the authors'
fine-tuning: the ViT and the pyramid's up/down-sampling layers (their ``backbone``) frozen,
layer decay 0.8 over the decoder blocks, lr 1e-4, 108 epochs (lr x0.1 at epochs 81 and 99);
evaluated on val2017 (nAP = the novel classes' AP). Start from the base model through
``d2ext.projects.imted.fewshot_init_from_base`` (projects/imTED/README.md, Commands), which
keeps its base-class and background classifier rows as the authors do.

    python tools/train_net.py \
        --config-file projects/imTED/configs/imted_faster_rcnn_vit_b_fewshot_10shot.py \
        train.init_checkpoint=imted_fewshot_init.pth
    # 30-shot: dataloader.train.dataset.names=coco_2017_train_30shot_seed0 train.max_iter=16200
"""

from d2ext.projects.imted.builders import imted_model, imted_optimizer
from d2ext.solver.scaling import epochs_to_iters

from .imted_faster_rcnn_vit_b_fewshot_base import dataloader, lr_multiplier, train

model = imted_model("B", num_classes=80)
model.backbone.frozen = True  # ViT + up/down-sampling layers; the 1x1 / 3x3 convs train
optimizer = imted_optimizer(num_layers=12, num_decoder_layers=8, rate=0.8)
optimizer.lr = 1e-4

dataloader.train.dataset.names = "coco_2017_train_10shot_seed0"
dataloader.test.dataset.names = "coco_2017_val"
# 108 epochs counted over 80 x 10 images, the most a 10-shot split holds (k per class): at
# least 108 passes over it (30-shot: epochs_to_iters(108, 2400, 16) = 16200)
train.max_iter = epochs_to_iters(108, 80 * 10, 16)  # 5400
train.checkpointer.period = epochs_to_iters(6, 80 * 10, 16)  # every 6 epochs, as the authors
lr_multiplier.steps = (81 / 108, 99 / 108)
train.output_dir = "output/imted_faster_rcnn_vit_b_fewshot_10shot"
