"""Fine-tuning the two-stage Deformable DETR R-50 (12 epochs on COCO) after AlignDet: the
recipe of projects/CoDETR/configs/deformable_detr_R50_12ep_coco.py with AlignDet's rule, lr x1.5
and wd x0.5 (AdamW 3e-4, wd 5e-5).

    python tools/convert_pretrain.py output/aligndet_deformable_detr_R50_coco_12ep/model_final.pth \
        aligndet_d2.pth --map online.= --drop-source projector --config-file <this>
    python tools/train_net.py --num-gpus 8 --config-file <this> \
        train.init_checkpoint=aligndet_d2.pth
"""

from ...CoDETR.configs.deformable_detr_R50_12ep_coco import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

optimizer.lr = 2e-4 * 1.5
optimizer.weight_decay = 1e-4 * 0.5
train.init_checkpoint = ""  # the extracted AlignDet checkpoint
train.output_dir = "output/deformable_detr_R50_12ep_coco_aligndet_finetune"
