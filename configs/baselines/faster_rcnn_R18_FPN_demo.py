"""Faster R-CNN R18-FPN from random initialisation on the demo shapes; the README's main job.

Sized for a 2-core CPU: the demo detector of configs/common/models/faster_rcnn_R18_FPN_demo.py
(ResNet-18 with BN, 128-channel FPN, 512-d box head, small RPN/ROI sample counts), short side
176-208 (configs/common/data/demo.py).
"""

from d2ext.model_zoo import get_config
from d2ext.solver import with_gradient_clipping

dataloader = get_config("common/data/demo.py").dataloader
model = get_config("common/models/faster_rcnn_R18_FPN_demo.py").model
optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

train.max_iter = 700
train.checkpointer.period = 200
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/faster_rcnn_R18_FPN_demo"
optimizer.lr = 0.02
optimizer.weight_decay = 1e-4
# full-model L2 norm of the gradients at most 5, clipped in optimizer.step()
optimizer.update(_target_=with_gradient_clipping, optimizer=optimizer._target_, clip_value=5.0)
lr_multiplier.warmup_iter = 100
