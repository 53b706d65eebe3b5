"""SoCo pretraining, 400 ImageNet epochs, without cutout (tools/SoCo_FPN_400ep.sh uses the
dataset class without it); otherwise the 100-epoch recipe."""

from .soco_R50_FPN_4conv1fc_in1k_100ep import (
    BATCH,
    IMAGENET_TRAIN_IMAGES,
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.max_iter = 400 * IMAGENET_TRAIN_IMAGES // BATCH
train.output_dir = "output/soco_R50_FPN_4conv1fc_in1k_400ep"
dataloader.train.mapper.cutout_prob = 0.0
