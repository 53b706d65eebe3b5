"""Demo fine-tuning for AlignDet: the demo FCOS (R18, 128-channel FPN P3-P7) on the demo
shapes, with AlignDet's fine-tuning rule (lr x1.5, wd x0.5 of the detector's default
SGD 0.01, wd 1e-4), 300 iterations, batch 4.

From AlignDet:  train.init_checkpoint=<extracted AlignDet checkpoint> (backbone, FPN, head)
Baseline:       train.init_checkpoint=<the same backbone alone>     (FPN and head random)
"""

from d2ext.model_zoo import get_config
from d2ext.solver import with_gradient_clipping

dataloader = get_config("common/data/demo.py").dataloader
model = get_config("common/models/fcos_R18_FPN_demo.py").model
optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

optimizer.lr = 0.01 * 1.5
optimizer.weight_decay = 1e-4 * 0.5
# full-model L2 norm of the gradients at most 5, clipped in optimizer.step()
optimizer.update(_target_=with_gradient_clipping, optimizer=optimizer._target_, clip_value=5.0)
train.max_iter = 300
train.checkpointer.period = 100
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/aligndet_fcos_R18_FPN_demo_finetune"
lr_multiplier.warmup_iter = 50
