"""Demo fine-tuning for AlignDet's DETR: the demo Deformable DETR
(configs/common/models/deformable_detr_R18_demo.py, the recipe of
projects/CoDETR/configs/deformable_detr_R18_demo.py) on the demo shapes with AlignDet's rule,
lr x1.5 and wd x0.5 of the detector's AdamW 2e-4 / 1e-4.

From AlignDet:  train.init_checkpoint=<extracted AlignDet checkpoint> (backbone, mapper,
                transformer; classifiers and last box layers random)
Baseline:       train.init_checkpoint=<the same backbone alone>
"""

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/demo.py").dataloader
model = get_config("common/models/deformable_detr_R18_demo.py").model
optimizer = get_config("common/optim.py").DETRAdamW
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

optimizer.lr = 2e-4 * 1.5
optimizer.weight_decay = 1e-4 * 0.5
train.max_iter = 500
train.checkpointer.period = 200
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/aligndet_deformable_detr_R18_demo_finetune"
lr_multiplier.steps = (11 / 12,)
lr_multiplier.warmup_iter = 0
