"""AlignDet box-domain pretraining of the two-stage Deformable DETR R-50
(configs/common/models/deformable_detr.py, the base detector of Co-DETR) on COCO train2017
images (labels unused): 12 epochs at batch 16, the detector's own optimiser (AdamW 2e-4,
wd 1e-4, clip 0.1, lr x0.1 after epoch 11); momentum detector 0.996 -> 1 (cosine) with the query
embeddings copied; two views at short side 640-800 (long side at most 1333), flip, one of the
nine RandAug colour operations; top-50 proposals per image; the ResNet frozen.

Needs the proposals (AlignDet's ratio3size0008 filter) and an ImageNet ResNet-50 (torchvision
weights, RGB) for both detectors, as a local file:
    train.init_checkpoint=<R-50 under online.backbone.* and target.backbone.*>
    (d2ext.projects.aligndet.backbone_init_for_aligndet(state, prefix="backbone."))
"""

from omegaconf import OmegaConf

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_loader, aligndet_model

model = aligndet_model(get_config("common/models/deformable_detr.py").model)

dataloader = OmegaConf.create()
dataloader.train = aligndet_loader(
    "coco_2017_train",
    "${oc.env:DETECTRON2_DATASETS,datasets}/coco/proposals_aligndet",
    short_edge=(640, 800),
    sample_style="range",
    max_size=1333,
    batch=16,
    max_proposals=50,
)
dataloader.train.mapper.image_format = "RGB"
optimizer = get_config("common/optim.py").DETRAdamW
lr_multiplier = get_config("common/schedules.py").multistep
lr_multiplier.steps = (11 / 12,)  # lr x0.1 after epoch 11
lr_multiplier.warmup_iter = 0
train = get_config("common/train.py").train

train.max_iter = 88000  # 12 epochs of COCO train2017 at batch 16
train.checkpointer.period = 5000
train.eval_period = 0
train.init_checkpoint = ""
train.allow_partial_init = True  # ImageNet backbone only (about 49% of the parameters)
train.output_dir = "output/aligndet_deformable_detr_R50_coco_12ep"
