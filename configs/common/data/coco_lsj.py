"""COCO 2017 detection data with Co-DINO's LSJ recipe (``co_dino_5scale_lsj_r50_1x_coco.py``),
RGB, batch 16, images without objects kept (``filter_empty_gt=False``). Training: resize to a
long side of 1024 x r, r ~ U(0.1, 2.0), random 1024 x 1024 crop, boxes recomputed from the
masks, objects of side <= 0.01 px dropped, flip 0.5, pad to 1024 x 1024 with 114, then
copy-paste of up to 99 objects of another training image (the authors'
``CopyPaste(max_num_pasted=100)``; needs the instance masks). Test: the long side resized to
1024; the model pads the batch. For the Swin-L (1280) and ViT-L (1536) recipes, set
``dataloader.train.mapper.augmentations.image_size`` and
``dataloader.test.mapper.augmentations.image_size``."""

from detectron2.config import LazyCall as L
from detectron2.data import get_detection_dataset_dicts

from d2ext.data.copy_paste import LSJCopyPasteDatasetMapper, build_lsj_copy_paste_train_loader
from d2ext.data.transforms import lsj_augmentations, lsj_test_augmentations
from d2ext.model_zoo import get_config

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train = L(build_lsj_copy_paste_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=False),
    mapper=L(LSJCopyPasteDatasetMapper)(
        is_train=True,
        augmentations=L(lsj_augmentations)(
            image_size=1024, min_scale=0.1, max_scale=2.0, pad_value=114.0, horizontal_flip=True
        ),
        image_format="RGB",
        use_instance_mask=True,
        copy_paste=True,
        max_num_pasted=100,
        bbox_occluded_thr=10,
        mask_occluded_thr=300,
        min_box_size=1e-2,
    ),
    total_batch_size=16,
    num_workers=4,
)
dataloader.test.mapper.augmentations = L(lsj_test_augmentations)(image_size=1024)
dataloader.test.mapper.image_format = "RGB"
