"""SoCo transfer: Mask R-CNN R50-FPN 1x on COCO with the 4conv1fc box head and SyncBN
everywhere, weight decay 2.5e-5, RGB inputs normalised as in pretraining (ImageNet mean / std
on 0-255) and precise BN (200 batches) before each evaluation and after the last iteration
(the authors' fine-tuning recipe, SoCo detectron2_configs/SoCo_FPN_100ep.yaml and
R_50_FPN_1x.yaml).

    python tools/convert_pretrain.py soco.pth soco_d2.pth \
        --map online.backbone.=backbone. --map online.box_head.=roi_heads.box_head. \
        --config-file projects/SoCo/configs/mask_rcnn_R50_FPN_4conv1fc_SyncBN_1x_coco.py
    python tools/train_net.py --config-file <this> train.init_checkpoint=soco_d2.pth
"""

from detectron2.config import LazyCall as L

from d2ext.model_zoo import get_config
from d2ext.projects.soco.hooks import PreciseBN

dataloader = get_config("common/data/coco.py").dataloader
optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

model = get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up.stem.norm = "SyncBN"
model.backbone.bottom_up.stages.norm = "SyncBN"
model.backbone.norm = "SyncBN"
model.backbone.bottom_up.stages.stride_in_1x1 = False  # as the SoCo backbone
model.roi_heads.box_head.update(conv_dims=[256, 256, 256, 256], fc_dims=[1024], conv_norm="SyncBN")
model.roi_heads.mask_head.conv_norm = "SyncBN"
# the pretraining's inputs (SoCoDatasetMapper's RGB views, SoCo's pixel mean / std)
model.input_format = "RGB"
model.pixel_mean = [123.675, 116.280, 103.530]
model.pixel_std = [58.395, 57.120, 57.375]
dataloader.train.mapper.image_format = "RGB"  # the test mapper follows it

train.max_iter = 90000
train.init_checkpoint = ""  # the converted SoCo checkpoint
train.output_dir = "output/soco_mask_rcnn_R50_FPN_1x_coco"
optimizer.lr = 0.02
optimizer.weight_decay = 2.5e-5
# detectron2's TEST.PRECISE_BN (ENABLED: True, NUM_ITER 200) as a hook on the trainer's model
train.extra_hooks = [
    L(PreciseBN)(period="${train.eval_period}", data_loader="${dataloader.train}", num_iter=200)
]
