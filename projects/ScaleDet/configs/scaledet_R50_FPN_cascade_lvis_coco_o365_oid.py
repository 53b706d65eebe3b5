"""ScaleDet full scale: Cascade R-CNN R50-FPN trained on LVIS v1 + COCO + Objects365 v2 +
OpenImages in one unified label space of CLIP text embeddings; scored on each dataset's val
split in its own label space.

Needs the four datasets under $DETECTRON2_DATASETS (detectron2's layout for LVIS/COCO, Detic's
for Objects365/OpenImages: d2ext/data/datasets/large_vocabulary.py) and a local OpenCLIP
ViT-B/32 checkpoint (scaledet.text.pretrained). Choices the paper leaves open are in
``scaledet`` and documented in projects/ScaleDet/README.md.

    python tools/train_net.py --num-gpus 8 --config-file \
        projects/ScaleDet/configs/scaledet_R50_FPN_cascade_lvis_coco_o365_oid.py \
        scaledet.text.pretrained=/path/to/open_clip_vit_b32.bin
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper
from detectron2.evaluation import COCOEvaluator, LVISEvaluator
from detectron2.model_zoo import get_config as d2_get_config

from d2ext.model_zoo import get_config
from d2ext.projects.scaledet import MultiDatasetEvaluator, MultiDatasetTestLoader
from d2ext.projects.scaledet.builders import dataset_test, make_scaledet, multi_dataset_loader

from .common.scaledet import scaledet

optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/schedules.py").multistep
train = get_config("common/train.py").train

model = d2_get_config("common/models/cascade_rcnn.py").model
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
make_scaledet(model)

scaledet.datasets = ["lvis_v1_train", "coco_2017_train", "objects365_v2_train", "oid_train"]
scaledet.ratios = [1.0, 1.0, 1.0, 1.0]
scaledet.one_dataset_per_batch = True  # every batch from one dataset (its image sizes, density)
scaledet.text.update(
    backend="open_clip",
    model="ViT-B-32",
    pretrained=None,
    path="output/scaledet/text/lvis+coco+o365+oid.npy",
    vocab_dir="output/scaledet/text",
)

_train_mapper = L(DatasetMapper)(
    is_train=True,
    augmentations=[
        L(T.ResizeShortestEdge)(
            short_edge_length=(640, 672, 704, 736, 768, 800), max_size=1333, sample_style="choice"
        ),
        L(T.RandomFlip)(horizontal=True),
    ],
    image_format="BGR",
    use_instance_mask=False,
)
_test_mapper = L(DatasetMapper)(
    is_train=False,
    augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
    image_format="BGR",
)
dataloader = {
    "train": multi_dataset_loader(_train_mapper, total_batch_size=64, num_workers=8),
    "tests": {
        "lvis": dataset_test(
            "lvis_v1_val",
            _test_mapper,
            L(LVISEvaluator)(dataset_name="lvis_v1_val", max_dets_per_image=300),
        ),
        "coco": dataset_test(
            "coco_2017_val", _test_mapper, L(COCOEvaluator)(dataset_name="coco_2017_val")
        ),
        "objects365": dataset_test(
            "objects365_v2_val", _test_mapper, L(COCOEvaluator)(dataset_name="objects365_v2_val")
        ),
        "openimages": dataset_test(
            "oid_val_expanded", _test_mapper, L(COCOEvaluator)(dataset_name="oid_val_expanded")
        ),
    },
}
# detectron2's own do_test (tools/lazyconfig_train_net.py) reads only dataloader.test and
# dataloader.evaluator: they run the same entries, each in its own vocabulary
dataloader["test"] = L(MultiDatasetTestLoader)(tests="${..tests}")
dataloader["evaluator"] = L(MultiDatasetEvaluator)(tests="${..tests}")
for _predictor in model.roi_heads.box_predictors:
    _predictor.test_topk_per_image = 300  # LVIS-style evaluation keeps 300 detections

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.allow_partial_init = True  # ImageNet backbone only
train.max_iter = 180000
train.eval_period = 0
train.checkpointer.period = 5000
train.output_dir = "output/scaledet_R50_FPN_cascade_lvis_coco_o365_oid"
optimizer.lr = 0.08  # 0.02 x 64 / 16
lr_multiplier.warmup_iter = 1000
