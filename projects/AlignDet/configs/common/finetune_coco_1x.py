"""Fine-tuning after AlignDet, shared by the R50-FPN detectors: detectron2's COCO 1x recipe
(90k iterations at batch 16, steps at 2/3 and 8/9) with AlignDet's rule, wd x0.5 (5e-5) and
lr x1.5 (the configs set the lr and the model); train.init_checkpoint: the extracted AlignDet
checkpoint."""

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
optimizer = get_config("common/optim.py").SGD
optimizer.weight_decay = 1e-4 * 0.5
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train
train.max_iter = 90000
train.init_checkpoint = ""  # the extracted AlignDet checkpoint
