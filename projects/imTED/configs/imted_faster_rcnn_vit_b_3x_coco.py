"""imTED Faster R-CNN, ViT-B encoder + MAE decoder box head, COCO 3x (36 epochs at batch 16),
with the authors' DETR-style augmentation (flip, then resize or resize-crop-resize) and their
MAE checkpoint (mae_pretrain_vit_base_full.pth).

    python tools/convert_mae.py mae_pretrain_vit_base_full.pth imted_vit_b.pth \
        --config-file projects/imTED/configs/imted_faster_rcnn_vit_b_3x_coco.py
    python tools/train_net.py --num-gpus 8 \
        --config-file projects/imTED/configs/imted_faster_rcnn_vit_b_3x_coco.py \
        train.init_checkpoint=imted_vit_b.pth
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from d2ext.data.transforms import resize_or_crop_resize
from d2ext.model_zoo import get_config
from d2ext.projects.imted.builders import imted_model, imted_optimizer
from d2ext.solver.scaling import epochs_to_iters

dataloader = get_config("common/data/coco.py").dataloader
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

model = imted_model("B")
optimizer = imted_optimizer(num_layers=12)

dataloader.train.mapper.image_format = "RGB"  # MAE's normalisation (the model block's)
# the authors' pipeline: RandomFlip, then AutoAugment (short side 480-800; or short side
# 400/500/600, crop 384-600, short side 480-800). With masks, cropping COCO's polygons needs
# shapely (detectron2's optional dependency).
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(resize_or_crop_resize)(),
]
dataloader.train.total_batch_size = 16
train.max_iter = epochs_to_iters(36, 117266, 16)  # 263,848: 36 epochs of annotated train2017
train.checkpointer.period = 10000
train.output_dir = "output/imted_faster_rcnn_vit_b_3x_coco"
train.init_checkpoint = ""  # an MAE full checkpoint converted by tools/convert_mae.py
lr_multiplier.steps = (27 / 36, 33 / 36)  # lr x0.1 at epochs 27 and 33
lr_multiplier.warmup_iter = 500  # the authors' (mmdet's schedule_1x): linear, ratio 0.001
