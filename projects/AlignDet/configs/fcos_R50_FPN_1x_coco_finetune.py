"""Fine-tuning FCOS R50-FPN 1x on COCO after AlignDet: detectron2's recipe with AlignDet's
rule, lr x1.5 and wd x0.5 (SGD 0.01 x 1.5, wd 5e-5), 90k iterations at batch 16.

    python tools/convert_pretrain.py output/aligndet_fcos_R50_FPN_coco_12ep/model_final.pth \
        aligndet_d2.pth --map online.= --drop-source projector --config-file <this>
    python tools/train_net.py --num-gpus 8 --config-file <this> \
        train.init_checkpoint=aligndet_d2.pth
"""

from ....configs.common.data.coco import dataloader
from ....configs.common.models.fcos_fpn import model
from ....configs.common.optim import SGD as optimizer
from ....configs.common.schedules import multistep as lr_multiplier
from ....configs.common.train import train

dataloader.train.mapper.use_instance_mask = False
optimizer.lr = 0.01 * 1.5
optimizer.weight_decay = 1e-4 * 0.5
train.max_iter = 90000
train.init_checkpoint = ""  # the extracted AlignDet checkpoint
train.output_dir = "output/fcos_R50_FPN_1x_coco_aligndet_finetune"
