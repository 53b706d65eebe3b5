"""Co-DINO-5scale ViT-L, 12 epochs of COCO fine-tuning from the Objects365-pretrained detector
of co_dino_ViTL_o365.py (Co-DETR's co_dino_vit/co_dino_5scale_vit_large_coco; 65.9 AP val with
the authors' own Objects365 checkpoint).

The authors' values: ViT-L (embed 1024, depth 24, heads 16, image 1536, window 24 with a global
block every fourth, drop path 0.4) and a simple feature pyramid from its stride-16 map
(strides 4-64); 1500 queries; 300 denoising queries at box noise 0.4; R-CNN box head 4 conv
(GN) + 1 fc, class-agnostic regression (stds 0.05, 0.05, 0.1, 0.1); test: the top 1500 pairs,
soft-NMS 0.8, 1000 detections; augmentation: the two AutoAugment policies with short sides
480-1536 (long <= 2400); test at (2048, 1280); AdamW 5e-5, wd 0.01 (none on norms, biases,
position embeddings), layer-wise lr decay 0.8 over 24 blocks, grad clip 0.1; linear warmup 500
iterations from 0.01; lr x0.1 after epoch 7 of 12.

Not the authors': the backbone is detectron2's ViT (GELU MLP x4, relative position bias in
the attention) where theirs is an EVA-02-style ViT (SwiGLU MLP x 4 * 2/3 with sub-LN, 2-d
rotary position embedding); the pyramid is detectron2's SimpleFeaturePyramid (transposed-conv
upsampling, p6 by max-pooling) followed by the DINO neck's 1x1 conv + GN per level; there is no
EMA of the weights (theirs: momentum 1e-4)."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT

from d2ext.data.transforms import resize_or_crop_resize
from d2ext.projects.codetr import ViTLayerDecayLRFactor

from .co_dino_R50_12ep_coco import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(SimpleFeaturePyramid)(
    net=L(ViT)(
        img_size=1536,
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.4,
        window_size=24,
        window_block_indexes=[i for i in range(24) if i % 4 != 3],
        use_rel_pos=True,
        out_feature="last_feat",
    ),
    in_feature="last_feat",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
    square_pad=0,
)
_levels = {f"p{k}": ShapeSpec(channels=256, stride=2**k) for k in range(2, 7)}
model.neck.input_shapes = _levels
model.neck.in_features = list(_levels)
model.neck.num_extra_levels = 0
model.transformer.num_queries = 1500
model.denoising.num_dn_queries = 300
model.denoising.box_noise_scale = 0.4
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]
model.roi_heads.box_head.conv_norm = "GN"
model.roi_heads.box_head.fc_dims = [1024]
model.roi_heads.box_predictor.cls_agnostic_bbox_reg = True
model.roi_heads.box_predictor.box2box_transform.weights = (20.0, 20.0, 10.0, 10.0)
model.num_detections = 1000
model.num_preselect = 1500
model.size_divisibility = 32

_scales = tuple(range(480, 1537, 32))
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(resize_or_crop_resize)(
        scales=_scales,
        max_size=2400,
        crop_scales=(400, 500, 600),
        crop_max_size=4200,
        crop_size=(384, 600),
        crop_type="absolute_range",
    ),
]
dataloader.train.total_batch_size = 16
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=1280, max_size=2048)
]

optimizer.lr = 5e-5
optimizer.weight_decay = 0.01
optimizer.params.lr_factor_func = L(ViTLayerDecayLRFactor)(num_layers=24, lr_decay_rate=0.8)
optimizer.params.weight_decay_norm = 0.0
optimizer.params.weight_decay_bias = 0.0
optimizer.params.overrides = {
    "pos_embed": {"weight_decay": 0.0},
    "rel_pos_h": {"weight_decay": 0.0},
    "rel_pos_w": {"weight_decay": 0.0},
}
# 12 epochs of COCO train2017 at batch 16; lr x0.1 after epoch 7; warmup 500 it from 0.01
train.max_iter = 88000
lr_multiplier.steps = (7 / 12,)
lr_multiplier.warmup_iter = 500
lr_multiplier.warmup_factor = 0.01
train.init_checkpoint = "output/co_dino_ViTL_o365/model_final.pth"
train.allow_partial_init = True  # the class heads change from 365 to 80 classes
train.output_dir = "output/co_dino_ViTL_coco"
