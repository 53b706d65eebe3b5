"""ScaleDet at demo scale: the demo Faster R-CNN R18-FPN trained jointly on the embedded shapes
and signs datasets (9 labels after merging "triangle"), scored on each one's val split in its
own label space and zero-shot on the synonyms split (labels never trained).

    python tools/train_net.py --config-file projects/ScaleDet/configs/scaledet_R18_FPN_demo.py
"""

from detectron2.config import LazyCall as L

from d2ext.evaluation import COCOEvaluator
from d2ext.model_zoo import get_config
from d2ext.projects.scaledet import MultiDatasetEvaluator, MultiDatasetTestLoader
from d2ext.projects.scaledet.builders import dataset_test, make_scaledet, multi_dataset_loader

from .common.scaledet import scaledet

_base = get_config("baselines/faster_rcnn_R18_FPN_demo.py")
dataloader, lr_multiplier, model, optimizer, train = (
    _base.dataloader,
    _base.lr_multiplier,
    _base.model,
    _base.optimizer,
    _base.train,
)

scaledet.datasets = ["d2ext_demo_shapes_train", "d2ext_demo_signs_train"]
scaledet.ratios = [1.0, 1.0]
scaledet.text.path = "output/scaledet_demo/text/shapes+signs.npy"
scaledet.text.vocab_dir = "output/scaledet_demo/text"
make_scaledet(model)

dataloader.train = multi_dataset_loader(dataloader.train.mapper, 4, 1)
dataloader.tests = {
    "shapes": dataset_test(
        "d2ext_demo_shapes_val",
        dataloader.test.mapper,
        L(COCOEvaluator)(dataset_name="d2ext_demo_shapes_val"),
    ),
    "signs": dataset_test(
        "d2ext_demo_signs_val",
        dataloader.test.mapper,
        L(COCOEvaluator)(dataset_name="d2ext_demo_signs_val"),
    ),
    # zero-shot: nine labels named by near-synonyms that no training set uses
    "synonyms": dataset_test(
        "d2ext_demo_synonyms_val",
        dataloader.test.mapper,
        L(COCOEvaluator)(dataset_name="d2ext_demo_synonyms_val"),
    ),
}
# detectron2's own do_test (tools/lazyconfig_train_net.py) reads only dataloader.test and
# dataloader.evaluator: they run the same entries, each in its own vocabulary
dataloader.test = L(MultiDatasetTestLoader)(tests="${..tests}")
dataloader.evaluator = L(MultiDatasetEvaluator)(tests="${..tests}")

train.max_iter = 600
train.checkpointer.period = 200
train.output_dir = "output/scaledet_demo/joint"
lr_multiplier.warmup_iter = 100
