"""imTED few-shot, stage 2: fine-tune on a k-shot split of all 80 classes (default 10-shot,
seed 0; any ``coco_2017_train_{k}shot_seed{s}``) from the base model, backbone frozen, layer
decay over the decoder; evaluated on val2017 (nAP = the novel classes' AP).

    python tools/train_net.py \
        --config-file projects/imTED/configs/imted_faster_rcnn_vit_b_fewshot_10shot.py \
        train.init_checkpoint=output/imted_faster_rcnn_vit_b_fewshot_base/model_final.pth \
        dataloader.train.dataset.names=coco_2017_train_30shot_seed0
"""

from d2ext.projects.imted.builders import imted_model

from .imted_faster_rcnn_vit_b_fewshot_base import dataloader, lr_multiplier, optimizer, train

model = imted_model("B", num_classes=80)
model.backbone.net.frozen = True

dataloader.train.dataset.names = "coco_2017_train_10shot_seed0"
dataloader.test.dataset.names = "coco_2017_val"
optimizer.lr = 5e-5
train.max_iter = 4000
train.checkpointer.period = 1000
train.output_dir = "output/imted_faster_rcnn_vit_b_fewshot_10shot"
lr_multiplier.warmup_iter = 100
