import pytest
import torch
from detectron2.config import instantiate

from d2ext.checkpoint import (
    D2extCheckpointer,
    Transformed,
    compare_with_model,
    convert_checkpoint,
    convert_state_dict,
    load_checkpoint,
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


class _Tiny(torch.nn.Module):
    """A detector-like model: backbone.conv, a position table, head.fc and a fresh head.norm."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.conv = torch.nn.Conv2d(3, 4, 3)
        self.backbone.pos = torch.nn.Parameter(torch.zeros(1, 16, 4))
        self.head = torch.nn.Module()
        self.head.fc = torch.nn.Linear(4, 2)
        self.head.norm = torch.nn.LayerNorm(2)


def _tiny_source():
    torch.manual_seed(0)
    return {
        "enc.conv.weight": torch.randn(4, 3, 3, 3),
        "enc.conv.bias": torch.randn(4),
        "enc.pos": torch.randn(1, 4, 4),  # a 2x2 grid: the model's is 4x4
        "dec.fc.weight": torch.randn(3, 4),  # another shape than the model's (2, 4)
        "dec.fc.bias": torch.randn(2),
        "dec.extra.weight": torch.randn(2),  # the model has no head.extra
        "dec.opt.weight": torch.randn(2),  # optional: the model has no head.opt
        "mask_token": torch.randn(1, 1, 4),  # unused by design
        "other.x": torch.randn(1),  # matches no prefix
    }


def _resize(src, new, value, expected):
    if new == "backbone.pos" and expected is not None and value.shape != expected.shape:
        grid = value.reshape(1, 2, 2, 4).permute(0, 3, 1, 2)
        big = torch.nn.functional.interpolate(grid, size=(4, 4), mode="nearest")
        return Transformed(big.permute(0, 2, 3, 1).reshape(1, 16, 4), interpolated=True)
    if new == "head.fc.weight":
        return Transformed(value, note="head.fc with 3 outputs")
    return None


MAP = [("mask_token", None), ("enc.", "backbone."), ("dec.", "head.")]


def test_convert_checkpoint_reports_every_key_and_writes(tmp_path):
    src = _tiny_source()
    path = tmp_path / "src.pth"
    torch.save({"model": src, "epoch": 3}, path)
    model = _Tiny()
    new, rep = convert_checkpoint(
        str(path),
        MAP,
        model=model,
        dst=str(tmp_path / "out.pth"),
        unmatched="unexpected",
        optional=("dec.opt",),
        transform=_resize,
        fresh=("head.norm.",),
        meta={"note": "t"},
    )
    assert rep.compared
    assert sorted(rep.loaded) == ["backbone.conv.bias", "backbone.conv.weight", "backbone.pos",
                                  "head.fc.bias"]  # fmt: skip
    assert rep.interpolated == ["backbone.pos"]
    assert rep.shape_mismatch == [
        "head.fc.weight: checkpoint (3, 4) vs model (2, 4) (head.fc with 3 outputs)"
    ]
    assert sorted(rep.unexpected) == ["dec.extra.weight", "other.x"]
    assert sorted(rep.unused) == ["dec.opt.weight", "mask_token"]
    assert rep.missing == ["head.fc.weight"]  # head.norm.* start fresh by design
    assert set(new) == set(rep.loaded) and new["backbone.pos"].shape == (1, 16, 4)
    assert torch.equal(new["backbone.pos"][0, 0], src["enc.pos"][0, 0])
    assert "4 loaded, 1 missing, 2 unexpected, 1 of another shape, 1 interpolated" in rep.summary()
    written = load_checkpoint(tmp_path / "out.pth")
    assert written["note"] == "t" and written["matching_heuristics"] is False
    assert set(written["model"]) == set(new)
    model.load_state_dict(written["model"], strict=False)
    assert torch.equal(model.backbone.conv.weight, src["enc.conv.weight"])

    # without a model: names only, every mapped key kept
    new, rep = convert_checkpoint(src, MAP)
    assert not rep.compared and rep.unused == ["mask_token", "other.x"]
    assert len(new) == 7 and not rep.missing and not rep.shape_mismatch


def test_convert_checkpoint_fail_on_writes_nothing(tmp_path):
    dst = tmp_path / "out.pth"
    with pytest.raises(ValueError, match="shape_mismatch") as e:
        convert_checkpoint(
            _tiny_source(), MAP, model=_Tiny(), dst=str(dst), fail_on=("shape_mismatch",)
        )
    assert "head.fc.weight" in str(e.value) and not dst.exists()
    assert not list(tmp_path.iterdir())  # no temporary left either
    with pytest.raises(ValueError, match="unmatched"):
        convert_checkpoint(_tiny_source(), MAP, unmatched="ignored")
    with pytest.raises(ValueError, match="fail_on names"):
        convert_checkpoint(_tiny_source(), MAP, fail_on=("mismatch",))


def test_convert_checkpoint_progress_bars(tmp_path, capsys):
    torch.save({"model": _tiny_source()}, tmp_path / "src.pth")
    new, _ = convert_checkpoint(
        str(tmp_path / "src.pth"), MAP, dst=str(tmp_path / "out.pth"), progress=True
    )
    err = capsys.readouterr().err
    assert "reading src.pth" in err and "writing out.pth" in err
    assert "<" in err and "B/s" in err  # elapsed<remaining (the ETA) and the rate
    quiet, _ = convert_checkpoint(str(tmp_path / "src.pth"), MAP)
    assert all(torch.equal(new[k], quiet[k]) for k in quiet)
    out = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    assert all(torch.equal(out[k], quiet[k]) for k in quiet)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_progress_reader_keeps_the_safe_load(tmp_path, ext):
    """The progress bar's file wrapper feeds the same restricted loaders."""
    import pickle

    import numpy as np

    from d2ext.checkpoint import UnsafeCheckpointError

    good, bad, marker = tmp_path / f"good.{ext}", tmp_path / f"bad.{ext}", tmp_path / "marker"
    if ext == "pkl":
        with open(good, "wb") as f:
            pickle.dump({"model": {"w": np.arange(3.0)}}, f, protocol=2)
        with open(bad, "wb") as f:
            pickle.dump({"x": _Payload(str(marker))}, f)
    else:
        torch.save({"model": {"w": torch.arange(3.0)}}, good)
        torch.save({"x": _Payload(str(marker))}, bad)
    assert list(load_checkpoint(good, progress=True)["model"]["w"]) == [0.0, 1.0, 2.0]
    with pytest.raises(UnsafeCheckpointError, match="--unsafe-load"):
        load_checkpoint(bad, progress=True)
    assert not marker.exists()
