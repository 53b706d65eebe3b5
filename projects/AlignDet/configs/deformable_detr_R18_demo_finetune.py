"""Demo fine-tuning for AlignDet's DETR: the demo Deformable DETR
(projects/CoDETR/configs/deformable_detr_R18_demo.py) on the demo shapes with AlignDet's rule,
lr x1.5 and wd x0.5 of the detector's AdamW 2e-4 / 1e-4.

From AlignDet:  train.init_checkpoint=<extracted AlignDet checkpoint> (backbone, mapper,
                transformer; classifiers and last box layers random)
Baseline:       train.init_checkpoint=<the same backbone alone>
"""

from ...CoDETR.configs.deformable_detr_R18_demo import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

optimizer.lr = 2e-4 * 1.5
optimizer.weight_decay = 1e-4 * 0.5
train.output_dir = "output/aligndet_deformable_detr_R18_demo_finetune"
