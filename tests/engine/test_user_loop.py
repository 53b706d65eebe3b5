"""d2ext configs in a user's own detectron2 loop, not d2ext's train_loop.

``lazyconfig_do_train`` / ``lazyconfig_do_test`` follow detectron2's
``tools/lazyconfig_train_net.py`` step by step (instantiate ``cfg.model``; ``cfg.optimizer`` with
``params.model = model``; ``cfg.dataloader.train``; SimpleTrainer / AMPTrainer; hooks
IterationTimer, LRScheduler, PeriodicCheckpointer, EvalHook(do_test), PeriodicWriter). Two
iterations of the SoCo, AlignDet, Co-DETR and ScaleDet demo configs must clip gradients,
update the momentum target by the EMA formula and evaluate, as under d2ext's own loop.
"""

import math

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import (
    AMPTrainer,
    HookBase,
    SimpleTrainer,
    create_ddp_model,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from d2ext.model_zoo import get_config
from d2ext.modeling.momentum import cosine_momentum

from ..helpers import demo_data_root

# ------------------------------------------ detectron2's tools/lazyconfig_train_net.py logic


def lazyconfig_do_test(cfg, model):
    """``do_test`` of lazyconfig_train_net.py."""
    if "evaluator" in cfg.dataloader:
        ret = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
        print_csv_format(ret)
        return ret


def lazyconfig_do_train(cfg, probes=()):
    """``do_train`` of lazyconfig_train_net.py (no resume). ``probes``: the test's read-only
    hooks, placed before the checkpointer. Returns the trainer and every do_test result."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer = DetectionCheckpointer(
        model, cfg.train.output_dir, optimizer=optim, trainer=trainer
    )
    evaluations = []

    def test_and_record():
        evaluations.append(lazyconfig_do_test(cfg, model))
        return evaluations[-1]

    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            *probes,
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, test_and_record),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=False)
    trainer.train(0, cfg.train.max_iter)
    return trainer, evaluations


# ------------------------------------------------------------------------------ tiny inputs


def _first_images(name: str, n: int = 2) -> str:
    """A registered copy of dataset ``name`` with its first ``n`` images (COCOEvaluator then
    converts it to COCO json itself)."""
    subset = f"{name}_first{n}"
    if subset not in DatasetCatalog.list():
        dicts = DatasetCatalog.get(name)[:n]
        DatasetCatalog.register(subset, lambda: [dict(d) for d in dicts])
        meta = MetadataCatalog.get(name).as_dict()
        meta = {k: v for k, v in meta.items() if k not in ("name", "json_file")}
        MetadataCatalog.get(subset).set(**meta)
    return subset


def _tiny_test(loader, evaluator, output_dir):
    names = loader.dataset.names
    subset = _first_images(names if isinstance(names, str) else names[0])
    loader.dataset.names = subset
    loader.num_workers = 0
    evaluator.dataset_name = subset
    evaluator.output_dir = output_dir


def user_loop_overrides(cfg, output_dir: str, max_iter: int = 2):
    """CPU, batch 2 in the main process, ``max_iter`` iterations, no initial checkpoint, and
    the config's own evaluation kept on the first 2 images of each test set. Unlike
    tests.helpers.tiny_overrides nothing else is removed: the config's optimizer, model and
    evaluators are what a user would train with."""
    cfg.train.update(device="cpu", output_dir=output_dir, max_iter=max_iter, log_period=1)
    cfg.train.update(eval_period=0, init_checkpoint="")
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    heads = cfg.model.get("roi_heads")
    if heads is not None and "batch_size_per_image" in heads:
        heads.batch_size_per_image = 16
    tests = cfg.dataloader.get("tests") or {}
    for t in tests.values():
        if t is not None:
            _tiny_test(t.loader, t.evaluator, output_dir)
    if not tests and cfg.dataloader.get("evaluator") is not None:
        _tiny_test(cfg.dataloader.test, cfg.dataloader.evaluator, output_dir)
    return cfg


class _ClipProbe(HookBase):
    """Total gradient norm of the optimizer's parameters before its step (after backward) and
    after it (the gradients the step used stay until the next zero_grad)."""

    def __init__(self):
        self.before, self.after = [], []

    def _norm(self):
        grads = [p.grad for g in self.trainer.optimizer.param_groups for p in g["params"]]
        return float(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None])
            )
        )

    def after_backward(self):
        self.before.append(self._norm())

    def after_step(self):
        self.after.append(self._norm())


class _TargetProbe(HookBase):
    """Online and target parameters right after step 0."""

    def after_step(self):
        if self.trainer.iter == 0:
            model = self.trainer.model
            self.online = {k: p.detach().clone() for k, p in model.online.named_parameters()}
            self.target = {k: p.detach().clone() for k, p in model.target.named_parameters()}


def _check_momentum(model, probe, base_momentum):
    """2 iterations: forward 1 applied target = m t + (1 - m) online with m = m(1) of K = 2
    (``total_steps`` follows train.max_iter), on the weights step 0 produced."""
    assert model.momentum_schedule.total_steps == 2
    assert int(model.momentum_schedule.iteration) == 2
    m = cosine_momentum(base_momentum, 1, 2)
    assert base_momentum < m < 1
    moved = 0
    for k, p in model.target.named_parameters():
        expected = m * probe.target[k] + (1 - m) * probe.online[k]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
        moved += not torch.equal(p, probe.target[k])
    assert moved > 0


# ----------------------------------------------------------------------------------- tests


def test_soco_momentum_target_updates(tmp_path, demo_unlabeled_proposals):
    demo_data_root()
    cfg = user_loop_overrides(get_config("SoCo/soco_R18_FPN_4conv1fc_demo.py"), str(tmp_path))
    cfg.dataloader.train.mapper.proposals.cache_dir = demo_unlabeled_proposals
    probe = _TargetProbe()
    torch.manual_seed(0)
    trainer, evaluations = lazyconfig_do_train(cfg, [probe])
    _check_momentum(trainer.model, probe, 0.99)
    assert trainer.storage.history("momentum").latest() == cosine_momentum(0.99, 1, 2)
    assert evaluations == [None]  # pretraining has no evaluator: do_test skips


def test_aligndet_momentum_target_updates_and_gradients_clip(tmp_path, demo_unlabeled_proposals):
    demo_data_root()
    cfg = get_config("AlignDet/aligndet_faster_rcnn_R18_FPN_demo.py")
    cfg = user_loop_overrides(cfg, str(tmp_path))
    cfg.dataloader.train.mapper.proposals.cache_dir = demo_unlabeled_proposals
    target, clip = _TargetProbe(), _ClipProbe()
    torch.manual_seed(0)
    trainer, evaluations = lazyconfig_do_train(cfg, [target, clip])
    _check_momentum(trainer.model, target, 0.996)
    settings = trainer.optimizer.gradient_clipping
    assert settings["clip_type"] == "full_model" and settings["clip_value"] == 5.0
    for before, after in zip(clip.before, clip.after):
        assert after == pytest.approx(min(before, 5.0), rel=1e-4)
    assert evaluations == [None]


def test_codetr_gradients_clip_at_0_1_and_evaluation_runs(tmp_path):
    demo_data_root()
    cfg = user_loop_overrides(get_config("CoDETR/co_deformable_detr_R18_demo.py"), str(tmp_path))
    probe = _ClipProbe()
    torch.manual_seed(0)
    trainer, evaluations = lazyconfig_do_train(cfg, [probe])
    settings = trainer.optimizer.gradient_clipping
    assert settings == {"clip_type": "full_model", "clip_value": 0.1, "norm_type": 2.0}
    assert len(probe.before) == 2 and min(probe.before) > 0.1  # clipping was needed...
    assert probe.after == pytest.approx([0.1, 0.1], rel=1e-4)  # ...and happened
    (results,) = evaluations
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}
    assert trainer.storage.latest()["bbox/AP"][0] == results["bbox"]["AP"] or math.isnan(
        results["bbox"]["AP"]
    )


def test_scaledet_evaluates_every_dataset_in_its_own_vocabulary(tmp_path):
    """The plain dataloader.test / dataloader.evaluator keys run ScaleDet's per-dataset
    evaluation: each test set in its own label space (the zero-shot synonyms set too)."""
    from d2ext.projects.scaledet import dataset_label_names, label_space_names
    from d2ext.projects.scaledet.text_embeddings import save_text_embeddings

    demo_data_root()
    cfg = user_loop_overrides(get_config("ScaleDet/scaledet_R18_FPN_demo.py"), str(tmp_path))
    # random 16-d label embeddings instead of the sentence encoder's (the loop is under test)
    rng = np.random.RandomState(0)
    text = tmp_path / "text"
    text.mkdir()
    cfg.scaledet.text.path = str(text / "train.npy")
    cfg.scaledet.text.vocab_dir = str(text)
    cfg.scaledet.text.backend = "precomputed"  # files given; no encoder to check them against
    names = label_space_names(list(cfg.scaledet.datasets), cfg.scaledet.merge_identical)
    save_text_embeddings(cfg.scaledet.text.path, rng.randn(len(names), 16), names)
    sizes = {}
    for entry in cfg.dataloader.tests.values():
        dataset = entry.context.embeddings.labels.dataset
        labels = dataset_label_names(dataset)
        save_text_embeddings(str(text / f"{dataset}.npy"), rng.randn(len(labels), 16), labels)
        sizes[dataset] = len(labels)
    torch.manual_seed(0)
    trainer, evaluations = lazyconfig_do_train(cfg)
    (results,) = evaluations
    assert set(results) == {f"{name}/bbox" for name in cfg.dataloader.tests}
    for metrics in results.values():
        assert {"AP", "AP50", "AP75"} <= set(metrics)
    # the EvalHook logged them; the training vocabulary is back after the evaluation
    assert "shapes/bbox/AP" in trainer.storage.latest()
    assert trainer.model.roi_heads.num_classes == len(names)


def test_multi_dataset_loader_tags_inputs_and_evaluator_routes_them():
    """Unit: the loader runs entries in turn and tags each input; null entries and entries
    without evaluator are skipped; results come back flat as "<name>/<task>"."""
    from detectron2.config import LazyCall as L
    from detectron2.evaluation import DatasetEvaluator

    from d2ext.projects.scaledet import MultiDatasetEvaluator, MultiDatasetTestLoader
    from d2ext.projects.scaledet.modeling import VocabularySwap

    class Count(DatasetEvaluator):
        def reset(self):
            self.ids = []

        def process(self, inputs, outputs):
            self.ids += [d["image_id"] for d in inputs]

        def evaluate(self):
            return {"bbox": {"n": float(len(self.ids))}}

    vocab = torch.randn(3, 4)
    tests = {
        "a": {
            "loader": [[{"image_id": 1}], [{"image_id": 2}]],
            "evaluator": L(Count)(),
            "context": L(VocabularySwap)(embeddings=vocab),
        },
        "b": {"loader": [[{"image_id": 3}, {"image_id": 4}]], "evaluator": L(Count)()},
        "c": None,
        "d": {"loader": [[{"image_id": 5}]], "evaluator": None},
    }
    loader, evaluator = MultiDatasetTestLoader(tests), MultiDatasetEvaluator(tests)
    assert len(loader) == 3
    batches = list(loader)
    assert [[d["test_set"] for d in b] for b in batches] == [["a"], ["a"], ["b", "b"]]
    assert batches[0][0]["vocabulary"] is vocab and "vocabulary" not in batches[2][0]
    evaluator.reset()
    for b in batches:
        evaluator.process(b, [None] * len(b))
    assert evaluator.evaluate() == {"a/bbox": {"n": 2.0}, "b/bbox": {"n": 2.0}}
    with pytest.raises(KeyError, match="test_set"):
        evaluator.process([{"image_id": 9}], [None])
    tests["b"]["context"] = L(Count)()  # any context but a VocabularySwap
    with pytest.raises(ValueError, match="VocabularySwap"):
        MultiDatasetTestLoader(tests)


def test_scaledet_rcnn_detects_in_the_inputs_vocabulary(tmp_path):
    """Unit: an input's "vocabulary" gives the same detections as swapping it in; the model's
    own vocabulary is back afterwards; mixed batches are refused."""
    from d2ext.projects.scaledet import ScaleDetRCNN, VocabularySwap, label_space_names
    from d2ext.projects.scaledet.text_embeddings import save_text_embeddings

    demo_data_root()
    cfg = get_config("ScaleDet/scaledet_R18_FPN_demo.py")
    names = label_space_names(list(cfg.scaledet.datasets), cfg.scaledet.merge_identical)
    cfg.scaledet.text.path = str(tmp_path / "train.npy")
    cfg.scaledet.text.backend = "precomputed"  # a file given; no encoder to check it against
    save_text_embeddings(cfg.scaledet.text.path, np.random.RandomState(0).randn(9, 16), names)
    cfg.model._target_ = ScaleDetRCNN
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    vocab = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with VocabularySwap(vocab)(model):
            expected = model([{"image": image}])[0]["instances"]
        got = model([{"image": image, "vocabulary": vocab}])[0]["instances"]
        own = model([{"image": image}])[0]["instances"]
    assert len(got) and int(got.pred_classes.max()) < 3
    assert torch.equal(got.pred_classes, expected.pred_classes)
    torch.testing.assert_close(got.scores, expected.scores)
    assert model.roi_heads.num_classes == 9 and int(own.pred_classes.max()) >= 3
    with pytest.raises(ValueError, match="same 'vocabulary'"):
        model([{"image": image, "vocabulary": vocab}, {"image": image}])
