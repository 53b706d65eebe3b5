"""SoCo pretraining at demo scale on CPU: the demo detector's ResNet-18 + 128-channel FPN with a
4conv1fc box head (128 channels, BN, FC 512), on the 400 unlabeled demo images.

Views 128 / 128 / 64 px (the images are 240-320 px), 8 images per batch, 250 steps, projector
1024 -> 128. SGD instead of LARS: at 16 images and a few hundred steps LARS's trust ratio
barely moves the weights; the full-scale recipes use LARS. Proposals: made by
`projects/SoCo/run_demo.py` (or tools/generate_proposals.py --dataset d2ext_demo_unlabeled).
"""

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from omegaconf import OmegaConf

from d2ext.model_zoo import get_config
from d2ext.projects.soco import SoCo, SoCoDatasetMapper
from d2ext.proposals import DatasetProposals

optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/schedules.py").cosine
train = get_config("common/train.py").train

model = L(SoCo)(
    backbone=get_config("common/models/faster_rcnn_R18_FPN_demo.py").model.backbone,
    box_head=L(FastRCNNConvFCHead)(
        input_shape=ShapeSpec(channels=128, height=7, width=7),
        conv_dims=[128, 128, 128, 128],
        fc_dims=[512],
        conv_norm="BN",
    ),
    in_features=("p2", "p3", "p4", "p5"),
    projector_hidden_dim=1024,
    out_dim=128,
    mlp_norm="BN",
    base_momentum=0.99,  # target EMA 0.99 -> 1 (cosine) over the run's iterations
    total_steps="${train.max_iter}",
)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="d2ext_demo_unlabeled", filter_empty=False),
    mapper=L(SoCoDatasetMapper)(
        proposals=L(DatasetProposals)(
            cache_dir="${oc.env:DETECTRON2_DATASETS,datasets}/d2ext_demo/proposals/soco_unlabeled",
            key="image_id",
        ),
        view_size=128,
        small_view_size=64,
        crop_scale=(0.5, 1.0),
        num_boxes=4,
    ),
    total_batch_size=8,
    aspect_ratio_grouping=False,
    num_workers=1,
)

train.max_iter = 250
train.checkpointer.period = 100
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/soco_R18_FPN_4conv1fc_demo"

optimizer.lr = 0.05
optimizer.weight_decay = 1e-5
lr_multiplier.warmup_iter = 20
