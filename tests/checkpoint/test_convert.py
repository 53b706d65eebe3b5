import pytest
import torch
from detectron2.config import instantiate

from d2ext.checkpoint import (
    D2extCheckpointer,
    compare_with_model,
    convert_state_dict,
    save_detectron2_checkpoint,
)

from ..helpers import load_config

PREDICTOR = "roi_heads.box_predictor."


def _detector(seed):
    torch.manual_seed(seed)
    cfg = load_config("configs/baselines/faster_rcnn_R18_FPN_demo.py")
    return instantiate(cfg.model).eval()


def _pretraining_state(detector):
    """Tensors laid out as a pretraining run saves them: an online and a target copy of
    backbone + box head (+ its own predictor layer), and a projector."""
    sd = detector.state_dict()
    kept = {
        k: v for k, v in sd.items() if k.startswith(("backbone.", "roi_heads.box_head.", PREDICTOR))
    }
    state = {f"online_net.{k}": v.clone() for k, v in kept.items()}
    state.update({f"target_net.{k}": v.clone() + 1 for k, v in kept.items()})
    state["projector.0.weight"] = torch.randn(4096, 1024)
    return state, kept


def test_convert_keeps_body_drops_predictors_and_loads(tmp_path):
    source = _detector(0)
    state, kept = _pretraining_state(source)
    new, report = convert_state_dict(state, [("online_net.", "")])
    predictor_keys = [k for k in kept if k.startswith(PREDICTOR)]
    assert len(predictor_keys) == 4
    assert sorted(report.dropped_predictors) == sorted(predictor_keys)
    assert len(report.converted) == len(kept) - 4
    assert all(k.startswith(("target_net.", "projector.")) for k in report.unused)

    target = _detector(1)
    cmp = compare_with_model(target, new)
    assert not cmp["unexpected"] and not cmp["shape_mismatch"]
    assert set(predictor_keys) <= set(cmp["missing"])
    assert any(k.startswith("proposal_generator.") for k in cmp["missing"])

    path = str(tmp_path / "converted.pth")
    save_detectron2_checkpoint(path, new, __author__="d2ext test")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    D2extCheckpointer(target).load(path)
    after = target.state_dict()
    for k in new:
        assert torch.equal(after[k], kept[k]), k
    for k in predictor_keys:  # the fresh detector keeps its own initialisation
        assert torch.equal(after[k], before[k])


def test_keep_predictors_and_errors():
    state, kept = _pretraining_state(_detector(0))
    new, report = convert_state_dict(state, [("online_net.", "")], keep_predictors=True)
    assert not report.dropped_predictors and len(new) == len(kept)
    with pytest.raises(ValueError, match="no key of the checkpoint"):
        convert_state_dict(state, [("student.", "")])
    with pytest.raises(ValueError, match="two source keys"):
        convert_state_dict(state, [("online_net.", ""), ("target_net.", "")])
    bad = {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}
    cmp = compare_with_model(_detector(0), bad)
    assert cmp["shape_mismatch"] and not cmp["loaded"]


def test_command_line_tool(tmp_path, capsys):
    import json
    import os

    from ..helpers import REPO, load_tool

    tool = load_tool("convert_pretrain")
    state, kept = _pretraining_state(_detector(0))
    torch.save({"model": state, "iteration": 10}, tmp_path / "pre.pth")
    out = tool.main(
        [
            str(tmp_path / "pre.pth"),
            str(tmp_path / "det.pth"),
            "--map",
            "online_net.=",
            "--config-file",
            os.path.join(REPO, "configs/baselines/faster_rcnn_R18_FPN_demo.py"),
            "--report",
            str(tmp_path / "report.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert f"{len(kept) - 4} tensors converted, 4 predictor tensors dropped" in printed
    assert "0 unexpected" in printed and "0 of another shape" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["loaded"]) == len(kept) - 4 == len(out["converted"])
    assert (tmp_path / "det.pth").exists()
    with pytest.raises(SystemExit, match="cannot read"):
        tool.main([str(tmp_path / "nope.pth"), str(tmp_path / "x.pth"), "--map", "a=b"])
