"""Fine-tuning RetinaNet R50-FPN 1x on COCO after AlignDet: detectron2's recipe with AlignDet's
rule, lr x1.5 and wd x0.5 (SGD 0.01 x 1.5, wd 5e-5), 90k iterations at batch 16.

    python tools/convert_pretrain.py output/aligndet_retinanet_R50_FPN_coco_12ep/model_final.pth \
        aligndet_d2.pth --map online.= --drop-source projector --config-file <this>
    python tools/train_net.py --num-gpus 8 --config-file <this> \
        train.init_checkpoint=aligndet_d2.pth
"""

from d2ext.model_zoo import get_config

from .common.finetune_coco_1x import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/retinanet_fpn.py").model
optimizer.lr = 0.01 * 1.5
train.output_dir = "output/retinanet_R50_FPN_1x_coco_aligndet_finetune"
