"""`train_net.py --eval-only`: loads train.init_checkpoint and scores it with COCOEvaluator."""

import json

import pytest

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
