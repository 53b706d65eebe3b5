"""Fine-tuning the two-stage Deformable DETR R-50 (12 epochs on COCO) after AlignDet: the
recipe of projects/CoDETR/configs/deformable_detr_R50_12ep_coco.py with AlignDet's rule, lr x1.5
and wd x0.5 (AdamW 3e-4, wd 5e-5).

    python tools/convert_pretrain.py output/aligndet_deformable_detr_R50_coco_12ep/model_final.pth \
        aligndet_d2.pth --map online.= --drop-source projector --config-file <this>
    python tools/train_net.py --num-gpus 8 --config-file <this> \
        train.init_checkpoint=aligndet_d2.pth
"""

from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco_detr.py").dataloader
model = get_config("common/models/deformable_detr.py").model
optimizer = get_config("common/optim.py").DETRAdamW
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

optimizer.lr = 2e-4 * 1.5
optimizer.weight_decay = 1e-4 * 0.5
train.max_iter = 88000  # 12 epochs of COCO train2017 at batch 16; lr x0.1 after epoch 11
lr_multiplier.steps = (11 / 12,)
lr_multiplier.warmup_iter = 0
train.checkpointer.period = 5000
train.eval_period = 0
train.init_checkpoint = ""  # the extracted AlignDet checkpoint
train.output_dir = "output/deformable_detr_R50_12ep_coco_aligndet_finetune"
