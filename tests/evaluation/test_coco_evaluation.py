"""d2ext.evaluation.COCOEvaluator: faster-coco-eval gives pycocotools' numbers; fallback path."""

import json
import logging
import math
import sys

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation
from detectron2.structures import Boxes, Instances
from pycocotools.cocoeval import COCOeval

from d2ext.evaluation import COCOEvaluator, coco_evaluation

CATEGORY_IDS = (1, 3, 7)  # non-contiguous: exercises detectron2's id unmapping
CLASS_NAMES = ("disc", "block", "bar")


def _rect_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _build_dataset(rng: np.random.Generator, num_images: int = 36):
    """COCO json with several categories, images without objects and crowd regions, plus
    detectron2-style model outputs (boxes, scores, classes, masks) that partly match it."""
    images, annotations, inputs, outputs = [], [], [], []
    for image_id in range(1, num_images + 1):
        h, w = int(rng.integers(120, 260)), int(rng.integers(120, 260))
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.png"})
        gts = []
        num_gt = 0 if image_id % 6 == 0 else int(rng.integers(1, 6))  # every 6th: no objects
        for _ in range(num_gt):
            bw, bh = float(rng.uniform(6, w * 0.8)), float(rng.uniform(6, h * 0.8))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            gts.append((x, y, bw, bh, int(rng.integers(0, 3))))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[gts[-1][4]],
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "segmentation": _rect_polygon(x, y, bw, bh),
                    "iscrowd": 0,
                }
            )
        if image_id % 5 == 0:  # a crowd region: detections inside it are ignored, not FP
            cw, ch = w / 2, h / 2
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[image_id % 3],
                    "bbox": [0.0, 0.0, cw, ch],
                    "area": cw * ch,
                    "segmentation": _rect_polygon(0.0, 0.0, cw, ch),
                    "iscrowd": 1,
                }
            )
            gts.append((2.0, 2.0, cw / 3, ch / 3, image_id % 3))  # a detection inside the crowd
        boxes, classes = [], []
        for x, y, bw, bh, c in gts:  # jittered true positives, some with the wrong class
            jx, jy = rng.normal(0, 0.1 * bw), rng.normal(0, 0.1 * bh)
            sw, sh = bw * rng.uniform(0.8, 1.2), bh * rng.uniform(0.8, 1.2)
            boxes.append([x + jx, y + jy, x + jx + sw, y + jy + sh])
            classes.append(c if rng.random() < 0.8 else int(rng.integers(0, 3)))
        for _ in range(int(rng.integers(0, 4))):  # false positives, also on empty images
            x1, y1 = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            boxes.append([x1, y1, rng.uniform(x1 + 4, w), rng.uniform(y1 + 4, h)])
            classes.append(int(rng.integers(0, 3)))
        if image_id % 7 == 0:
            boxes, classes = [], []  # an image without any prediction
        box_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        box_t[:, 0::2] = box_t[:, 0::2].clamp(0, w)
        box_t[:, 1::2] = box_t[:, 1::2].clamp(0, h)
        masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for k, (x1, y1, x2, y2) in enumerate(box_t.round().long().tolist()):
            masks[k, y1 : y2 + 1, x1 : x2 + 1] = True
            masks[k, y1 : (y1 + y2) // 2, x1 : (x1 + x2) // 2] = False  # not just the box
        instances = Instances((h, w))
        instances.pred_boxes = Boxes(box_t)
        instances.scores = torch.tensor(rng.uniform(0.05, 1.0, len(boxes)), dtype=torch.float32)
        instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
        instances.pred_masks = masks
        inputs.append({"image_id": image_id, "height": h, "width": w})
        outputs.append({"instances": instances})
    categories = [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, CLASS_NAMES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    return coco, inputs, outputs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    coco, inputs, outputs = _build_dataset(np.random.default_rng(0))
    json_file = tmp_path_factory.mktemp("coco") / "gt.json"
    json_file.write_text(json.dumps(coco))
    name = "d2ext_test_coco_evaluation"
    MetadataCatalog.get(name).set(
        json_file=str(json_file),
        thing_classes=list(CLASS_NAMES),
        thing_dataset_id_to_contiguous_id={cid: k for k, cid in enumerate(CATEGORY_IDS)},
    )
    yield name, inputs, outputs
    MetadataCatalog.remove(name)


def _evaluate(evaluator, inputs, outputs):
    evaluator.reset()
    for k in range(0, len(inputs), 4):
        evaluator.process(inputs[k : k + 4], outputs[k : k + 4])
    return evaluator.evaluate()


# faster-coco-eval's C++ accumulate rounds some precision entries 1 ulp away from pycocotools'
# numpy (measured: at most 2.3e-16 in ``eval["precision"]``, 5.6e-17 in ``stats``).
TOL = 1e-12


def _assert_same_results(a: dict, b: dict):
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys(), task
        for metric, value in a[task].items():
            other = b[task][metric]
            same = math.isclose(value, other, rel_tol=TOL, abs_tol=TOL)
            assert same or (math.isnan(value) and math.isnan(other)), (task, metric, value, other)


def test_faster_coco_eval_gives_pycocotools_numbers(dataset, monkeypatch):
    from faster_coco_eval import COCOeval_faster

    name, inputs, outputs = dataset
    fast = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False)
    assert fast.cocoeval_class is COCOeval_faster
    built = []

    class Recording(COCOeval_faster):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.params.iouType)

    monkeypatch.setattr(fast, "_cocoeval_cls", Recording)
    patched_name = d2_coco_evaluation.COCOeval_opt
    fast_results = _evaluate(fast, inputs, outputs)
    assert sorted(built) == ["bbox", "segm"]  # the numbers below came from faster-coco-eval
    assert d2_coco_evaluation.COCOeval_opt is patched_name  # detectron2's name is restored

    official = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, use_fast_impl=False)
    assert official.cocoeval_class is COCOeval
    official_results = _evaluate(official, inputs, outputs)

    for task in ("bbox", "segm"):
        res = official_results[task]
        assert set(res) >= {"AP", "AP50", "APs", "APm", "APl", "AP-disc", "AP-block", "AP-bar"}
        assert all(0.0 < res[k] < 100.0 for k in ("AP", "AP50", "APs", "APm", "APl")), res
    assert official_results["bbox"]["AP"] != official_results["segm"]["AP"]
    _assert_same_results(fast_results, official_results)


def test_matches_plain_pycocotools_on_the_written_results(dataset, tmp_path):
    """The fast evaluator's stats equal pycocotools run by hand on its own results json."""
    from pycocotools.coco import COCO

    name, inputs, outputs = dataset
    evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path))
    results = _evaluate(evaluator, inputs, outputs)
    detections = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert {d["category_id"] for d in detections} == set(CATEGORY_IDS)
    gt = COCO(MetadataCatalog.get(name).json_file)
    reference = COCOeval(gt, gt.loadRes(detections), "bbox")
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
    metrics = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    expected = [float(s * 100) for s in reference.stats[:6]]
    assert [results["bbox"][m] for m in metrics] == pytest.approx(expected, rel=TOL, abs=TOL)


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_falls_back_to_pycocotools_with_one_log(dataset, monkeypatch):
    name, inputs, outputs = dataset
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import raises ImportError
    monkeypatch.setattr(coco_evaluation, "_FALLBACK_LOGGED", False)
    handler = _ListHandler()
    coco_evaluation.logger.addHandler(handler)
    try:
        first = COCOEvaluator(name, tasks=("bbox",), distributed=False)
        second = COCOEvaluator(name, tasks=("bbox",), distributed=False)
    finally:
        coco_evaluation.logger.removeHandler(handler)
    fallback_logs = [m for m in handler.messages if "faster-coco-eval is not importable" in m]
    assert len(fallback_logs) == 1
    expected = d2_coco_evaluation.COCOeval_opt  # pycocotools' COCOeval without detectron2's _C
    assert first.cocoeval_class is expected and second.cocoeval_class is expected
    if expected is COCOeval:
        assert "pycocotools' COCOeval" in fallback_logs[0]

    official = COCOEvaluator(name, tasks=("bbox",), distributed=False, use_fast_impl=False)
    _assert_same_results(_evaluate(first, inputs, outputs), _evaluate(official, inputs, outputs))


def test_official_mode_does_not_log_the_fallback(dataset, monkeypatch):
    name, _, _ = dataset
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    monkeypatch.setattr(coco_evaluation, "_FALLBACK_LOGGED", False)
    evaluator = COCOEvaluator(name, distributed=False, use_fast_impl=False)
    assert evaluator.cocoeval_class is COCOeval
    assert coco_evaluation._FALLBACK_LOGGED is False
