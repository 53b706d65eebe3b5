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


def test_convert_mae_tool(tmp_path, capsys):
    import json

    from ..helpers import load_tool

    demo = _demo("imTED")
    mae = _model(os.path.relpath(demo.MAE_CONFIG, REPO)).state_dict()
    torch.save({"model": mae, "epoch": 0}, tmp_path / "mae.pth")
    argv = [str(tmp_path / "mae.pth"), str(tmp_path / "out.pth"), "--config-file", demo.DETECTOR]
    out = load_tool("convert_mae").main([*argv, "--report", str(tmp_path / "report.json")])
    captured = capsys.readouterr()
    assert "reading mae.pth" in captured.err and "writing out.pth" in captured.err
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(out))
    assert not out["missing"] and not out["unexpected"] and not out["shape_mismatch"]
    unused = [
        "decoder_norm.bias",
        "decoder_norm.weight",
        "decoder_pred.bias",
        "decoder_pred.weight",
    ]
    assert sorted(out["unused"]) == [*unused, "mask_token"]
    written = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    assert set(written) == set(out["loaded"])
    assert torch.equal(written["roi_heads.box_head.decoder_blocks.0.mlp.fc1.weight"],
                       mae["decoder_blocks.0.mlp.fc1.weight"])  # fmt: skip

    # a decoder table of another grid: reported with the fix, nothing written
    other = dict(mae, decoder_pos_embed=torch.zeros(1, 17, mae["decoder_pos_embed"].shape[-1]))
    torch.save({"model": other}, tmp_path / "mae4.pth")
    argv = [str(tmp_path / "mae4.pth"), str(tmp_path / "out4.pth"), "--config-file", demo.DETECTOR]
    with pytest.raises(SystemExit, match="pretrain_grid=4"):
        load_tool("convert_mae").main([*argv, "--no-progress"])
    assert not (tmp_path / "out4.pth").exists()
    out = load_tool("convert_mae").main([*argv, "--no-progress", "--allow-mismatch"])
    assert len(out["shape_mismatch"]) == 1
    written = torch.load(tmp_path / "out4.pth", weights_only=True)["model"]
    assert "roi_heads.box_head.decoder_pos_embed" not in written
