"""imTED Faster R-CNN at demo scale: the MAE ViT-Tiny of mae_vit_tiny_demo.py (192 x 6) with
its 128 x 2 decoder as the box head, on the embedded shapes, images read at short side
224-288 (the ViT sees them at stride 16).

imTED:        train.init_checkpoint=<tools/convert_mae.py of the MAE checkpoint>
encoder only: train.init_checkpoint=<tools/convert_mae.py --encoder-only ...>  (head random)
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2ext.model_zoo import get_config
from d2ext.projects.imted.builders import imted_model, imted_optimizer
from d2ext.solver import with_gradient_clipping

dataloader = get_config("common/data/demo.py").dataloader
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

model = imted_model("S", num_classes=5, drop_path=0.0)
model.backbone.net.update(embed_dim=192, depth=6, num_heads=3, img_size=160, pretrain_img_size=160)
model.backbone.out_channels = 64
model.proposal_generator.head.in_channels = 64
model.roi_heads.modulator.out_channels = 192
model.roi_heads.box_head.update(
    input_shape=ShapeSpec(channels=192, height=7, width=7), decoder_dim=128, depth=2, num_heads=4
)
model.roi_heads.box_head.pretrain_grid = 10  # the MAE demo's decoder table: 160 px / patch 16
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=128)
model.roi_heads.batch_size_per_image = 32  # the decoder head costs per RoI x 49 tokens
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 300)
optimizer = imted_optimizer(num_layers=6)
optimizer.lr = 5e-4
# full-model L2 norm of the gradients at most 5, clipped in optimizer.step()
optimizer.update(_target_=with_gradient_clipping, optimizer=optimizer._target_, clip_value=5.0)

dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(224, 256, 288), max_size=384, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=256, max_size=384)
]
train.max_iter = 800
train.checkpointer.period = 200
train.eval_period = 0
train.log_period = 20
train.output_dir = "output/imted_demo/imted"
lr_multiplier.warmup_iter = 100
