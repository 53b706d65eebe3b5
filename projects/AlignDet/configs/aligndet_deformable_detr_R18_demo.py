"""AlignDet box-domain pretraining at demo scale on CPU for the DETR family: the demo two-stage
Deformable DETR of configs/common/models/deformable_detr_R18_demo.py (ResNet-18 frozen,
128-d, 3 + 3 layers, 100 queries) on the 400 unlabeled demo images, the top-50 proposals per
image (AlignDet's DETR setting), two views at short side 176-208, 4 images per batch; the
detector's own optimiser (AdamW 2e-4, wd 1e-4, clip 0.1); query embeddings copied to the
momentum detector.

The frozen backbone comes from train.init_checkpoint (a ResNet-18 under online.backbone.* and
target.backbone.*; d2ext.projects.aligndet.backbone_init_for_aligndet(state, "backbone.")).
"""

from omegaconf import OmegaConf

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_loader, aligndet_model

model = aligndet_model(get_config("common/models/deformable_detr_R18_demo.py").model)

dataloader = OmegaConf.create()
dataloader.train = aligndet_loader(
    "d2ext_demo_unlabeled",
    "${oc.env:DETECTRON2_DATASETS,datasets}/d2ext_demo/proposals/aligndet_unlabeled",
    short_edge=(176, 208),
    sample_style="range",
    max_size=320,
    batch=4,
    max_proposals=50,
)
dataloader.train.num_workers = 1
optimizer = get_config("common/optim.py").DETRAdamW
lr_multiplier = get_config("common/schedules.py").multistep
lr_multiplier.steps = (11 / 12,)
lr_multiplier.warmup_iter = 0
train = get_config("common/train.py").train

train.max_iter = 200
train.checkpointer.period = 100
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/aligndet_deformable_detr_R18_demo"
