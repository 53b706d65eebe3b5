"""Co-DINO-5scale R-50, 12 epochs on COCO with large-scale jittering at 1024 and copy-paste
(Co-DETR's co_dino_5scale_lsj_r50_1x_coco, 52.1 AP in the authors' README):
co_dino_R50_12ep_coco.py with configs/common/data/coco_lsj.py (every training image is padded
to 1024 x 1024, so there is no padding mask and boxes are normalised by 1024, the authors'
with_attn_mask=False); the schedule of the 12-epoch config (lr x0.1 after epoch 11)."""

from d2ext.model_zoo import get_config

from .co_dino_R50_12ep_coco import lr_multiplier, model, optimizer, train

dataloader = get_config("common/data/coco_lsj.py").dataloader
train.output_dir = "output/co_dino_R50_12ep_lsj_coco"
