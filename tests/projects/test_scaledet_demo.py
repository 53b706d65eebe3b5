"""The ScaleDet demo's plan (projects/ScaleDet/run_demo.py): the joint model at equal
per-dataset iterations by default, the equal-total-iterations run as an option, run folders
that resume, and the targets checked on the means over seeds (no training: tools/train_net.py
is replaced by a recorder)."""

import importlib.util
import json
import os

import numpy as np
import pytest
from detectron2.config import LazyConfig

from ..helpers import REPO, demo_data_root


def _demo():
    path = os.path.join(REPO, "projects", "ScaleDet", "run_demo.py")
    spec = importlib.util.spec_from_file_location("scaledet_run_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _iters(config: str) -> int:
    return LazyConfig.load(config).train.max_iter


def test_plan_gives_the_joint_model_equal_per_dataset_iterations(tmp_path):
    demo = _demo()
    single = demo.single_iters()
    configs = {r["model"]: r["config"] for r in demo.plan([0], str(tmp_path), single, True)}
    assert single == _iters(configs["shapes only"]) == _iters(configs["signs only"])
    assert demo.single_iters(50) == 50

    runs = demo.plan([0, 1], str(tmp_path), 600)
    got = [(r["model"], r["seed"], os.path.basename(r["run_dir"]), r["max_iter"]) for r in runs]
    assert got == [
        ("joint 2x", 0, "joint2x_seed0", 1200),
        ("shapes only", 0, "shapes_seed0", 600),
        ("signs only", 0, "signs_seed0", 600),
        ("joint 2x", 1, "joint2x_seed1", 1200),
        ("shapes only", 1, "shapes_seed1", 600),
        ("signs only", 1, "signs_seed1", 600),
    ]
    by = {r["model"]: r for r in runs}
    joint = LazyConfig.load(by["joint 2x"]["config"])
    assert joint.scaledet.datasets == ["d2ext_demo_shapes_train", "d2ext_demo_signs_train"]
    assert LazyConfig.load(by["signs only"]["config"]).scaledet.datasets == [
        "d2ext_demo_signs_train"
    ]
    assert os.path.basename(by["joint 2x"]["text"]) == "shapes+signs.npy"

    extra = demo.plan([3], str(tmp_path), 100, joint_1x=True)
    got = [(r["model"], os.path.basename(r["run_dir"]), r["max_iter"]) for r in extra]
    assert got == [
        ("joint 2x", "joint2x_seed3", 200),
        ("shapes only", "shapes_seed3", 100),
        ("signs only", "signs_seed3", 100),
        ("joint 1x", "joint_seed3", 100),  # the earlier default run's folder
    ]


def _mean(joint, shapes, signs):
    """arm -> column means from (shapes AP, signs AP, synonyms AP) per arm."""
    cols = lambda v: {"shapes AP": v[0], "signs AP": v[1], "synonyms AP": v[2]}  # noqa: E731
    return {"joint 2x": cols(joint), "shapes only": cols(shapes), "signs only": cols(signs)}


def test_targets():
    demo = _demo()
    t = demo.check_targets(_mean((59.5, 59.9, 40.0), (60.4, 10.0, 30.0), (10.0, 61.0, 39.9)))
    assert [v["met"] for v in t.values()] == [True, False, True]
    name = "joint 2x within 1 AP of signs only on signs val"
    assert t[name] == {"joint": 59.9, "reference": 61.0, "met": False}
    t = demo.check_targets(_mean((59.5, 60.0, 40.0), (60.4, 10.0, 30.0), (10.0, 61.0, 39.9)))
    assert t[name]["met"]  # exactly 1 AP behind: within
    t = demo.check_targets(_mean((70.0, 70.0, 40.0), (60.0, 10.0, 30.0), (10.0, 61.0, 40.0)))
    assert [v["met"] for v in t.values()] == [True, True, False]  # a tie is not ahead


def test_main_trains_the_plan_and_resumes(tmp_path, monkeypatch):
    from d2ext.projects.scaledet import save_text_embeddings

    demo_data_root()
    demo = _demo()
    out = tmp_path / "scaledet_demo"
    calls = []
    ap = {"joint2x": (59.0, 59.6, 45.0), "shapes": (62.0, 10.0, 30.0), "signs": (9.0, 60.0, 31.0),
          "joint": (50.0, 49.0, 40.0)}  # fmt: skip

    def fake_train(config, output_dir, overrides=(), eval_only=False):
        opts = dict(o.split("=", 1) for o in overrides)
        if eval_only:  # the random-vocabulary control
            calls.append(("control", os.path.basename(os.path.dirname(output_dir))))
            res = {"synonyms": {"bbox": {"AP": 0.1, "AP50": 0.3}}}
        else:
            name = os.path.basename(output_dir)
            calls.append((name, int(opts["train.max_iter"])))
            prefix, seed = name.rsplit("_seed", 1)
            text = opts["scaledet.text.path"]
            if not os.path.exists(text):
                save_text_embeddings(text, np.ones((3, 8), np.float32), ["a", "b", "c"])
            res = {
                t: {"bbox": {"AP": v + int(seed), "AP50": v + 10}}
                for t, v in zip(demo.TESTS, ap[prefix])
            }
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump(res, f)

    monkeypatch.setattr(demo, "run_train_net", fake_train)
    summary = demo.main(["--out", str(out), "--iters", "30"])
    trained = [c for c in calls if c[0] != "control"]
    per_seed = [("joint2x_seed{}", 60), ("shapes_seed{}", 30), ("signs_seed{}", 30)]
    assert trained == [(n.format(s), i) for s in (0, 1) for n, i in per_seed]
    assert sorted(c[1] for c in calls if c[0] == "control") == sorted(c[0] for c in trained)
    assert summary["seeds"] == [0, 1]
    assert summary["mean"]["joint 2x"]["shapes AP"] == pytest.approx(59.5)
    assert summary["std"]["joint 2x"]["shapes AP"] == pytest.approx(2**-0.5)
    verdicts = [t["met"] for t in summary["targets"]["joint 2x"].values()]
    assert verdicts == [False, True, True]  # 59.5 vs 62.5; 60.1 vs 60.5; 45.5 vs 31.5
    assert json.loads((out / "summary.json").read_text())["targets"] == summary["targets"]

    calls.clear()  # a rerun adds only the joint model at equal total iterations
    summary = demo.main(["--out", str(out), "--iters", "30", "--seeds", "0", "--joint-1x"])
    assert calls == [("joint_seed0", 30), ("control", "joint_seed0")]
    assert set(summary["targets"]) == {"joint 2x", "joint 1x"}
    assert [r["iterations"] for r in summary["runs"]] == [60, 30, 30, 30]


def test_random_vocabulary_control_loads_its_random_vectors(tmp_path):
    # the control's overrides, applied to the demo config, must give the synonyms test the
    # random vectors the demo wrote (a random file has no text encoder to be checked against)
    import torch
    from detectron2.config import instantiate

    from d2ext.data import register_all_datasets
    from d2ext.projects.scaledet import dataset_label_names, read_embedding_file

    demo_data_root()
    register_all_datasets()
    demo = _demo()
    names = dataset_label_names("d2ext_demo_synonyms_val")
    rand = str(tmp_path / "random_synonyms_seed3.npy")
    demo._random_vocabulary(rand, names, 384, 3)
    run = demo.plan([0], str(tmp_path), 600)[0]
    cfg = LazyConfig.load(run["config"])
    common = [f"scaledet.text.vocab_dir={tmp_path / 'text'}"]
    overrides = demo.control_overrides("model_final.pth", run["text"], rand, common)
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    assert {k for k, v in cfg.dataloader.tests.items() if v is not None} == {"synonyms"}
    got = instantiate(cfg.dataloader.tests.synonyms.context.embeddings)
    want = torch.as_tensor(read_embedding_file(rand)[0])
    assert got.shape == (len(names), 384)
    assert torch.allclose(got, torch.nn.functional.normalize(want, dim=1), atol=1e-6)
