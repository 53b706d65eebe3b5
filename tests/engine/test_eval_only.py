"""`train_net.py --eval-only`: loads train.init_checkpoint and scores it with COCOEvaluator."""

import json

import pytest
from detectron2.evaluation import DatasetEvaluator

from d2ext.engine import do_train
from d2ext.engine.train_loop import argument_parser, main

from ..helpers import REPO, demo_data_root, load_config, tiny_overrides

CONFIG = "configs/baselines/faster_rcnn_R18_FPN_demo.py"


def test_eval_only_scores_a_checkpoint(tmp_path):
    demo_data_root()
    do_train(tiny_overrides(load_config(CONFIG), str(tmp_path / "train"), max_iter=1))
    ckpt = tmp_path / "train" / "model_final.pth"
    args = argument_parser().parse_args(
        [
            "--eval-only",
            "--config-file",
            f"{REPO}/{CONFIG}",
            f"train.init_checkpoint={ckpt}",
            f"train.output_dir={tmp_path / 'eval'}",
            "train.device=cpu",
            "dataloader.test.num_workers=0",
        ]
    )
    results = main(args)
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}
    saved = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert saved["bbox"]["AP"] == pytest.approx(results["bbox"]["AP"], nan_ok=True)


def test_eval_only_with_missing_checkpoint_fails_clearly(tmp_path):
    demo_data_root()
    args = argument_parser().parse_args(
        [
            "--eval-only",
            "--config-file",
            f"{REPO}/{CONFIG}",
            f"train.init_checkpoint={tmp_path / 'missing.pth'}",
            f"train.output_dir={tmp_path}",
            "train.device=cpu",
        ]
    )
    with pytest.raises(FileNotFoundError, match="not found"):
        main(args)
    args.opts = [o for o in args.opts if not o.startswith("train.init_checkpoint")]
    with pytest.raises(ValueError, match="init_checkpoint"):
        main(args)


class _Recorder:
    """A context factory and an evaluator that record what the evaluation saw."""

    log: list = []

    def __init__(self, tag):
        self.tag = tag

    def __call__(self, model):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            model.tag = self.tag
            _Recorder.log.append(("enter", self.tag))
            yield
            model.tag = None
            _Recorder.log.append(("exit", self.tag))

        return ctx()


def _batches(n):
    return [[k] for k in range(n)]


class _TagEvaluator(DatasetEvaluator):
    def __init__(self, tag):
        self.tag, self.seen = tag, []

    def reset(self):
        self.seen = []

    def process(self, inputs, outputs):
        self.seen += outputs

    def evaluate(self):
        in_context = sum(t == "vocab_a" for t in self.seen)
        return {"bbox": {"AP": float(len(self.seen)), "in_context": float(in_context)}}


def test_do_test_scores_each_dataset_under_its_context(tmp_path):
    """dataloader.tests: every entry evaluated by its own evaluator, inside its context, which
    is exited afterwards; entries set to null are skipped."""
    import torch
    from detectron2.config import LazyCall as L
    from omegaconf import OmegaConf

    from d2ext.engine import do_test

    class Model(torch.nn.Module):
        tag = None

        def forward(self, batch):
            return [self.tag for _ in batch]

    cfg = OmegaConf.create(
        {
            "train": {"output_dir": str(tmp_path)},
            "dataloader": {
                "tests": {
                    "a": {
                        "loader": L(_batches)(n=3),
                        "evaluator": L(_TagEvaluator)(tag="a"),
                        "context": L(_Recorder)(tag="vocab_a"),
                    },
                    "b": {"loader": L(_batches)(n=1), "evaluator": L(_TagEvaluator)(tag="b")},
                    "c": None,
                }
            },
        }
    )
    _Recorder.log.clear()
    model = Model()
    results = do_test(cfg, model)
    assert set(results) == {"a", "b"}
    assert results["a"]["bbox"] == {"AP": 3.0, "in_context": 3.0}
    assert results["b"]["bbox"] == {"AP": 1.0, "in_context": 0.0}  # outside any context
    assert _Recorder.log == [("enter", "vocab_a"), ("exit", "vocab_a")] and model.tag is None
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved["a"]["bbox"]["AP"] == 3.0
