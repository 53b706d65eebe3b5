"""The imTED demo's arms (projects/imTED/run_demo.py): the "random head" init checkpoint keeps
everything imTED migrates except the decoder's learned weights; the modulator's weight read
from a trained checkpoint; the per-arm summary over seeds."""

import importlib.util
import os

import pytest
import torch

from d2ext.projects.imted.checkpoint import MODULATOR_WEIGHT, modulator_weight

from ..helpers import REPO
from .test_imted import _demo_model, _official_checkpoint


def _demo():
    path = os.path.join(REPO, "projects", "imTED", "run_demo.py")
    spec = importlib.util.spec_from_file_location("imted_run_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_head_init_keeps_the_encoder_and_leaves_the_decoder_random(tmp_path):
    demo = _demo()
    ckpt = _official_checkpoint(grid=4)
    src = ckpt["model"]
    torch.save(ckpt, tmp_path / "mae.pth")
    model = _demo_model(pretrain_img_size=64)  # 4x4 grid: the encoder table is not resized
    out = tmp_path / "random_head_init.pth"
    demo.random_head_init(str(tmp_path / "mae.pth"), str(out), model=model)
    state = torch.load(out, weights_only=True)["model"]

    # the encoder (and the encoder's final LN, the head's first LN), as in the MAE checkpoint
    for mae_key, key in [
        ("cls_token", "backbone.net.cls_token"),
        ("pos_embed", "backbone.net.pos_embed"),
        ("patch_embed.proj.weight", "backbone.net.patch_embed.proj.weight"),
        ("blocks.0.attn.qkv.weight", "backbone.net.blocks.0.attn.qkv.weight"),
        ("blocks.1.mlp.fc2.bias", "backbone.net.blocks.1.mlp.fc2.bias"),
        ("norm.weight", "roi_heads.box_head.norm.weight"),
        ("decoder_pos_embed", "roi_heads.box_head.decoder_pos_embed"),
    ]:
        assert torch.equal(state[key], src[mae_key]), key
    n_encoder = sum(
        k.startswith(("cls_token", "pos_embed", "patch_embed.", "blocks.")) for k in src
    )
    assert sum(k.startswith("backbone.net.") for k in state) == n_encoder
    # no learned decoder weight in the file
    assert not [k for k in state if k.startswith(demo.DECODER_WEIGHTS)]

    # loaded into a freshly built detector (as the run loads it), the decoder is its random one
    detector = _demo_model(pretrain_img_size=64)
    fresh = {k: v.clone() for k, v in detector.state_dict().items()}
    incompatible = detector.load_state_dict(state, strict=False)
    assert not incompatible.unexpected_keys
    loaded = detector.state_dict()
    assert torch.equal(
        loaded["backbone.net.blocks.1.attn.proj.weight"], src["blocks.1.attn.proj.weight"]
    )
    for mae_key in ("decoder_embed.weight", "decoder_blocks.0.attn.qkv.weight",
                    "decoder_blocks.1.mlp.fc1.weight"):  # fmt: skip
        key = "roi_heads.box_head." + mae_key
        assert not torch.equal(loaded[key], src[mae_key]), key
        assert torch.equal(loaded[key], fresh[key]), key  # the detector's own initialisation

    # the imTED arm's file, from the same checkpoint, does carry the decoder
    full = tmp_path / "imted_init.pth"
    demo._convert(str(tmp_path / "mae.pth"), str(full), model=model)
    full_state = torch.load(full, weights_only=True)["model"]
    assert torch.equal(
        full_state["roi_heads.box_head.decoder_embed.weight"], src["decoder_embed.weight"]
    )
    assert set(full_state) - set(state) == {
        k for k in full_state if k.startswith(demo.DECODER_WEIGHTS)
    }

    # resumable: an existing init file is kept
    before = out.read_bytes()
    other = {"model": {k: v + 1 for k, v in src.items()}}
    torch.save(other, tmp_path / "other.pth")
    demo.random_head_init(str(tmp_path / "other.pth"), str(out), model=model)
    assert out.read_bytes() == before
    with pytest.raises(ValueError, match="two different arms"):
        demo._convert(str(tmp_path / "mae.pth"), str(tmp_path / "x.pth"), encoder_only=True,
                      random_head=True, model=model)  # fmt: skip


def test_modulator_weight_from_a_trained_checkpoint(tmp_path):
    model = _demo_model(pretrain_img_size=64)
    with torch.no_grad():
        w = model.roi_heads.box_pooler.modulator.weight
        w.copy_(torch.linspace(-0.3, 0.1, w.numel()))
    torch.save({"model": model.state_dict(), "iteration": 7}, tmp_path / "model_final.pth")
    got = modulator_weight(str(tmp_path / "model_final.pth"))
    assert torch.equal(got, w.detach())
    stats = _demo().modulator_stats(str(tmp_path / "model_final.pth"))
    assert stats["mean"] == pytest.approx(-0.1, abs=1e-6)
    assert stats["max_abs"] == pytest.approx(0.3, abs=1e-6)
    assert stats["mean_abs"] == pytest.approx(w.abs().mean().item(), abs=1e-6)
    assert len(stats["values"]) == w.numel()
    state = {k: v for k, v in model.state_dict().items() if k != MODULATOR_WEIGHT}
    with pytest.raises(KeyError, match="without imTED's modulator"):
        modulator_weight(state)


def test_summary_over_seeds_and_the_target():
    demo = _demo()
    ap = {"imTED": [7.0, 8.0, 9.0], "encoder only": [8.0, 8.5, 9.5], "random head": [6.0] * 3}
    rows = [
        {"init": arm, "seed": s, "AP": v, "AP50": 2 * v, "modulator": {"mean_abs": 0.01 * s}}
        for arm, values in ap.items()
        for s, v in enumerate(values)
    ]
    out = demo.summarize(rows, list(ap))
    assert out["mean"]["imTED"]["AP"] == pytest.approx(8.0)
    assert out["std"]["imTED"]["AP"] == pytest.approx(1.0)  # sample std over the 3 seeds
    assert out["std"]["random head"]["AP50"] == 0.0
    assert out["mean"]["encoder only"]["modulator mean |w|"] == pytest.approx(0.01)
    assert out["gains_AP"]["imTED - encoder only"] == pytest.approx(-2 / 3)
    assert out["gains_AP"]["imTED - random head"] == pytest.approx(2.0)
    assert out["target"] == {"imTED mean AP >= encoder only mean AP": "missed"}
    rows[0]["AP"] = 10.0  # imTED 9.0 mean: ahead
    assert demo.summarize(rows, list(ap))["target"] == {
        "imTED mean AP >= encoder only mean AP": "met"
    }


def test_rerun_adds_only_the_new_arm(tmp_path, monkeypatch):
    """A rerun over a folder where the two original arms finished trains only the random-head
    arm (no training here: tools/train_net.py is replaced by a recorder)."""
    import json
    import sys

    from detectron2.config import LazyConfig, instantiate

    from ..helpers import demo_data_root

    demo_data_root()
    demo = _demo()
    out = tmp_path / "imted_demo"
    mae = instantiate(LazyConfig.load(demo.MAE_CONFIG).model).state_dict()
    (out / "mae").mkdir(parents=True)
    torch.save({"model": mae, "iteration": 1}, out / "mae" / "model_final.pth")
    calls = []

    def fake_train(config, output_dir, overrides=(), eval_only=False):
        calls.append((os.path.basename(output_dir), list(overrides)))
        os.makedirs(output_dir, exist_ok=True)
        seed = next(int(o.split("=")[1]) for o in overrides if o.startswith("train.seed="))
        ap = {"imted": 7.0, "encoder_only": 8.0, "random_head": 6.0}
        ap = ap[os.path.basename(output_dir).rsplit("_seed", 1)[0]] + seed
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump({"bbox": {"AP": ap, "AP50": 2 * ap}}, f)
        weight = torch.full((192,), 0.01 * (seed + 1))
        torch.save(
            {"model": {MODULATOR_WEIGHT: weight}}, os.path.join(output_dir, "model_final.pth")
        )

    monkeypatch.setattr(sys.modules["demo_runs"], "run_train_net", fake_train)
    demo.main(["--seeds", "0", "--out", str(out), "--arms", "imted", "encoder_only"])
    assert [c[0] for c in calls] == ["imted_seed0", "encoder_only_seed0"]
    assert not (out / "random_head_init.pth").exists()
    calls.clear()
    summary = demo.main(["--seeds", "0", "1", "--out", str(out)])
    assert [c[0] for c in calls] == [
        "random_head_seed0",
        "imted_seed1",
        "encoder_only_seed1",
        "random_head_seed1",
    ]
    init = str(out / "random_head_init.pth")
    assert f"train.init_checkpoint={init}" in calls[0][1]
    assert summary["mean"]["random head"]["AP"] == pytest.approx(6.5)
    assert summary["std"]["imTED"]["AP"] == pytest.approx(2**-0.5)
    assert [r["modulator"]["mean"] for r in summary["runs"][:3]] == pytest.approx([0.01] * 3)
    assert summary["target"] == {"imTED mean AP >= encoder only mean AP": "missed"}
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["seeds"] == [0, 1] and len(on_disk["runs"]) == 6
