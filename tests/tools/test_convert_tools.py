"""The demos' conversion steps and tools/convert_mae.py run the one conversion path
(d2ext.checkpoint.convert_checkpoint): they write a checkpoint the detector loads, and write
nothing when a key does not fit."""

import importlib.util
import os

import pytest
import torch
from detectron2.config import instantiate

from ..helpers import REPO, load_config


def _demo(paper: str):
    path = os.path.join(REPO, "projects", paper, "run_demo.py")
    spec = importlib.util.spec_from_file_location(f"{paper}_run_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(config: str, seed: int = 0):
    torch.manual_seed(seed)
    return instantiate(load_config(config).model)


def _pretrain_dir(folder, state):
    """A pretraining run's output folder holding ``state`` as its final checkpoint."""
    folder.mkdir(parents=True)
    torch.save({"model": state, "iteration": 5}, folder / "model_final.pth")
    return str(folder)


def test_soco_demo_convert(tmp_path, capsys):
    demo = _demo("SoCo")
    state = _model(os.path.relpath(demo.PRETRAIN, REPO)).state_dict()
    dst = tmp_path / "soco_d2.pth"
    demo.convert(_pretrain_dir(tmp_path / "pretrain", state), str(dst))
    assert "0 unexpected, 0 of another shape" in capsys.readouterr().out
    out = torch.load(dst, weights_only=True)
    assert out["matching_heuristics"] is False and out["source"].endswith("pretrain")
    detector = _model(os.path.relpath(demo.FINETUNE, REPO), seed=1)
    detector.load_state_dict(out["model"], strict=False)
    key = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(detector.state_dict()[key], state["online." + key])
    assert not any(k.startswith(("target.", "online.")) for k in out["model"])

    bad = dict(state)
    bad["online." + key] = torch.zeros(3)
    dst2 = tmp_path / "bad.pth"
    with pytest.raises(SystemExit, match="shape_mismatch"):
        demo.convert(_pretrain_dir(tmp_path / "bad" / "pretrain", bad), str(dst2))
    assert not dst2.exists()


def test_aligndet_demo_extract(tmp_path, capsys):
    demo = _demo("AlignDet")
    pre, fine = (os.path.join(demo.CONFIGS, c) for c in demo.DETECTORS["retinanet"])
    state = _model(os.path.relpath(pre, REPO)).state_dict()
    dst = tmp_path / "aligndet_d2.pth"
    demo.extract(_pretrain_dir(tmp_path / "pretrain", state), fine, str(dst))
    printed = capsys.readouterr().out
    assert "0 unexpected, 0 of another shape" in printed
    model = torch.load(dst, weights_only=True)["model"]
    assert not any("projector" in k or k.startswith("target.") for k in model)
    assert not any(k.startswith(("head.cls_score.", "head.bbox_pred.")) for k in model)
    key = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(model[key], state["online." + key])

    wrong = fine.replace("retinanet", "fcos")  # another head: its keys do not fit RetinaNet's
    assert os.path.isfile(wrong)
    with pytest.raises(SystemExit, match="does not fit"):
        demo.extract(str(tmp_path / "pretrain"), wrong, str(tmp_path / "x.pth"))
    assert not (tmp_path / "x.pth").exists()
