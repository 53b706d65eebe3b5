"""Demo fine-tuning for AlignDet: the demo Faster R-CNN (configs/baselines/faster_rcnn_R18_FPN_demo)
with AlignDet's fine-tuning rule (lr x1.5, wd x0.5 of the detector's default), 300 iterations.

From AlignDet:  train.init_checkpoint=<extracted AlignDet checkpoint> (backbone, FPN, RPN, heads)
Baseline:       train.init_checkpoint=<the same backbone alone>     (FPN and heads random)
"""

from d2ext.model_zoo import get_config

_base = get_config("baselines/faster_rcnn_R18_FPN_demo.py")
dataloader, lr_multiplier, model, optimizer, train = (
    _base.dataloader,
    _base.lr_multiplier,
    _base.model,
    _base.optimizer,
    _base.train,
)

optimizer.lr = 0.02 * 1.5
optimizer.weight_decay = 1e-4 * 0.5
train.max_iter = 300
train.checkpointer.period = 100
train.output_dir = "output/aligndet_faster_rcnn_R18_FPN_demo_finetune"
lr_multiplier.warmup_iter = 50
