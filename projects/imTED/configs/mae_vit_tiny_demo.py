"""A compact MAE pretraining on the embedded images (unlabeled pool + the shapes and signs
training images, labels unused): ViT-Tiny encoder (192 x 6, 3 heads, patch 16) and a
128 x 2 decoder, 160-px crops, mask ratio 0.75. Its checkpoint has MAE's official key layout.

    python tools/train_net.py --config-file projects/imTED/configs/mae_vit_tiny_demo.py
"""

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

from d2ext.model_zoo import get_config
from d2ext.projects.imted import MAE, MAEDatasetMapper
from d2ext.solver.scaling import linear_scaled_lr

optimizer = get_config("common/optim.py").AdamW
lr_multiplier = get_config("common/schedules.py").cosine
train = get_config("common/train.py").train


model = L(MAE)(
    img_size=160,
    patch_size=16,
    embed_dim=192,
    depth=6,
    num_heads=3,
    decoder_embed_dim=128,
    decoder_depth=2,
    decoder_num_heads=4,
    mask_ratio=0.75,
    norm_pix_loss=True,
)
dataloader = {
    "train": L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(
            names=["d2ext_demo_unlabeled", "d2ext_demo_shapes_train", "d2ext_demo_signs_train"],
            filter_empty=False,
        ),
        mapper=L(MAEDatasetMapper)(size="${model.img_size}", image_format="RGB"),
        total_batch_size=32,
        aspect_ratio_grouping=False,
        num_workers=1,
    )
}
# MAE's base lr 1.5e-4 (x4: short schedule) x batch / 256, from dataloader.train.total_batch_size
optimizer.lr = L(linear_scaled_lr)(
    base_lr=1.5e-4 * 4, batch_size="${dataloader.train.total_batch_size}", base_batch_size=256
)
optimizer.weight_decay = 0.05
optimizer.betas = (0.9, 0.95)
lr_multiplier.warmup_iter = 100
train.max_iter = 800
train.eval_period = 0
train.log_period = 50
train.checkpointer.period = 500
train.output_dir = "output/imted_demo/mae"
