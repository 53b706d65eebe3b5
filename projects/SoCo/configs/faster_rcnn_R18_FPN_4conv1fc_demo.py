"""Demo fine-tuning for SoCo: the demo Faster R-CNN (configs/baselines/faster_rcnn_R18_FPN_demo)
with SoCo's 4conv1fc box head (128 channels, BN, FC 512), 300 iterations, RGB inputs
normalised as in SoCo pretraining.

From SoCo:      train.init_checkpoint=<converted SoCo checkpoint>
From scratch:   train.init_checkpoint=""   (the same network, randomly initialised)
"""

from d2ext.model_zoo import get_config

_base = get_config("baselines/faster_rcnn_R18_FPN_demo.py")
dataloader, lr_multiplier, model, optimizer, train = (
    _base.dataloader,
    _base.lr_multiplier,
    _base.model,
    _base.optimizer,
    _base.train,
)

model.roi_heads.box_head.update(conv_dims=[128, 128, 128, 128], fc_dims=[512], conv_norm="BN")

train.max_iter = 300
train.checkpointer.period = 100
train.output_dir = "output/soco_finetune_demo"
lr_multiplier.warmup_iter = 50

# the pretraining's inputs (SoCoDatasetMapper's RGB views, SoCo's pixel mean / std)
model.input_format = "RGB"
model.pixel_mean = [123.675, 116.280, 103.530]
model.pixel_std = [58.395, 57.120, 57.375]
dataloader.train.mapper.image_format = "RGB"  # the test mapper follows it
