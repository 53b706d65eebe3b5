"""Demo base detector: two-stage Deformable DETR on the demo shapes, sized for a 2-core CPU
(configs/common/models/deformable_detr_R18_demo.py: ResNet-18 with BN, 128-d, 3 + 3 layers,
FFN 512, 100 queries, no dropout), from the signs-trained ResNet-18 (projects/CoDETR/run_demo.py
makes it) with the authors' optimiser (AdamW 2e-4, wd 1e-4, backbone lr x0.1, clip 0.1) at
batch 4."""

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/demo.py").dataloader
model = get_config("common/models/deformable_detr_R18_demo.py").model
optimizer = get_config("common/optim.py").DETRAdamW
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

train.max_iter = 500
train.checkpointer.period = 200
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/deformable_detr_R18_demo"
lr_multiplier.steps = (11 / 12,)
lr_multiplier.warmup_iter = 0
