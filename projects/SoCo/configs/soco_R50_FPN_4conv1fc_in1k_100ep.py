"""SoCo pretraining, the authors' full recipe: ResNet-50 + FPN (P2-P5) + 4conv1fc box head on
ImageNet-1k, 100 epochs, batch 2048, LARS lr 1.0 x 2048 / 256, wd 1e-5, 10 warmup epochs
from lr / 100, cosine over the remaining 90; momentum 0.99 -> 1 (cosine); SyncBN; last norm of
each bottleneck zero-initialised; RGB views normalised with the ImageNet mean / std; cutout
inside the V2 / V3 boxes (p 0.5, 0.1-0.3 of the box) as in tools/SoCo_FPN_100ep.sh.

Needs ImageNet's train folder at $DETECTRON2_DATASETS/imagenet/train and its proposals:
    python tools/generate_proposals.py --images $DETECTRON2_DATASETS/imagenet/train \
        --out $DETECTRON2_DATASETS/imagenet/proposals_soco --filter ratio3size0308 --shard i/N
"""

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from omegaconf import OmegaConf

from d2ext.data.datasets import image_folder_dicts
from d2ext.model_zoo import get_config
from d2ext.projects.soco import SoCo, SoCoDatasetMapper
from d2ext.projects.soco.schedule import warmup_rescaled_cosine
from d2ext.proposals import DatasetProposals
from d2ext.solver.scaling import epochs_to_iters, linear_scaled_lr

optimizer = get_config("common/optim.py").LARS
# SoCo's schedule (contrast/lr_scheduler.py): linear warmup from lr / 100, then a cosine over
# the post-warmup iterations (rescale_interval) to 0 (the authors' eta_min is 1e-6 absolute)
lr_multiplier = L(warmup_rescaled_cosine)(
    max_iter="${train.max_iter}", warmup_iter=0, warmup_factor=0.01, end_value=0.0
)
train = get_config("common/train.py").train

IMAGENET_TRAIN_IMAGES = 1281167
BATCH = 2048
EPOCHS = 100

_backbone = get_config("common/models/faster_rcnn_fpn.py").model.backbone
_backbone.bottom_up.stem.norm = "SyncBN"
_backbone.bottom_up.stages.norm = "SyncBN"
_backbone.norm = "SyncBN"
_backbone.bottom_up.stages.stride_in_1x1 = False  # torchvision-style ResNet, as SoCo trains

model = L(SoCo)(
    backbone=_backbone,
    box_head=L(FastRCNNConvFCHead)(
        input_shape=ShapeSpec(channels=256, height=7, width=7),
        conv_dims=[256, 256, 256, 256],
        fc_dims=[1024],
        conv_norm="SyncBN",
    ),
    in_features=("p2", "p3", "p4", "p5"),
    projector_hidden_dim=4096,
    out_dim=256,
    mlp_norm="SyncBN",
    pool_all_levels=True,  # every box at P2-P5, one head batch per level
    loss_average="image",
    zero_init_residual=True,
    pixel_mean=(123.675, 116.280, 103.530),  # RGB, as the mapper's views
    pixel_std=(58.395, 57.120, 57.375),
    base_momentum=0.99,  # target EMA 0.99 -> 1 (cosine) over the run's iterations
    total_steps="${train.max_iter}",
)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(image_folder_dicts)(root="${oc.env:DETECTRON2_DATASETS,datasets}/imagenet/train"),
    mapper=L(SoCoDatasetMapper)(
        proposals=L(DatasetProposals)(
            cache_dir="${oc.env:DETECTRON2_DATASETS,datasets}/imagenet/proposals_soco",
            key="image_id",
        ),
        view_size=224,
        small_view_size=112,
        crop_scale=(0.5, 1.0),
        num_boxes=4,
        max_tries=5,
        jitter_prob=0.5,
        jitter_ratio=0.1,
        clip_rule="soco",
        cutout_prob=0.5,
        cutout_ratio=(0.1, 0.3),
        image_format="RGB",
    ),
    total_batch_size=BATCH,
    aspect_ratio_grouping=False,
    num_workers=8,
)
# pretraining: no dataloader.evaluator, nothing to evaluate

# train.max_iter is read as a number by the trainer: with another batch size, set it too
# (EPOCHS x IMAGENET_TRAIN_IMAGES // batch); lr and warmup below follow the batch by themselves.
train.max_iter = EPOCHS * IMAGENET_TRAIN_IMAGES // BATCH
train.checkpointer.period = 5000
train.eval_period = 0
train.output_dir = "output/soco_R50_FPN_4conv1fc_in1k_100ep"

# lr 1.0 x batch / 256 and 10 warmup epochs, from dataloader.train.total_batch_size when built
optimizer.lr = L(linear_scaled_lr)(
    base_lr=1.0, batch_size="${dataloader.train.total_batch_size}", base_batch_size=256
)
optimizer.weight_decay = 1e-5
lr_multiplier.warmup_iter = L(epochs_to_iters)(
    epochs=10, num_images=IMAGENET_TRAIN_IMAGES, batch_size="${dataloader.train.total_batch_size}"
)
