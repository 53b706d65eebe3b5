"""imTED few-shot, stage 1: base training on COCO's 60 base classes (backbone frozen, as the
imTED few-shot recipe), evaluated on the base classes of val2017.

    python tools/train_net.py \
        --config-file projects/imTED/configs/imted_faster_rcnn_vit_b_fewshot_base.py \
        train.init_checkpoint=imted_vit_b.pth
"""

from d2ext.projects.imted.builders import imted_model, imted_optimizer

from .imted_faster_rcnn_vit_b_3x_coco import dataloader, lr_multiplier, train

model = imted_model("B", num_classes=60)
model.backbone.net.frozen = True
# the encoder is frozen: layer decay runs over the decoder blocks of the box head
optimizer = imted_optimizer(num_layers=12, num_decoder_layers=8)

dataloader.train.dataset.names = "coco_2017_train_base"
dataloader.test.dataset.names = "coco_2017_val_base"
train.max_iter = 110000
train.output_dir = "output/imted_faster_rcnn_vit_b_fewshot_base"
