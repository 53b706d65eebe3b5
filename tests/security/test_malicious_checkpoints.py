"""A crafted checkpoint runs no code on any loading path: the converters, the imTED demo's
loader, train.init_checkpoint, --eval-only and --resume. Each refuses the file with an error
naming it and the switch that loads a trusted file; real checkpoints (MAE with ``args``,
detectron2 / Detectron1 model-zoo ``.pkl``) still load."""

import argparse
import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from d2ext.checkpoint import D2extCheckpointer, UnsafeCheckpointError, load_checkpoint
from d2ext.engine import do_train
from d2ext.engine.train_loop import argument_parser, build_checkpointer, main

from ..helpers import REPO, demo_data_root, load_config, load_tool, tiny_overrides
from ..projects.test_imted import _official_checkpoint

CONFIG = "configs/baselines/faster_rcnn_R18_FPN_demo.py"
TRAIN_SWITCH = "train.unsafe_load=True"
TOOL_SWITCH = "--unsafe-load"


class _System:
    """Unpickling calls os.system (in a pickle: posix.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    """Unpickling calls builtins.exec: the builtins module is partly allowed for .pkl files."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


PAYLOADS = [_System, _Exec]


def _write_malicious(path, payload, marker, model=None):
    """A checkpoint that looks right (a model state dict) and carries the payload."""
    model = model if model is not None else {"backbone.weight": torch.zeros(2)}
    if str(path).endswith(".pkl"):
        arrays = {k: v.numpy() for k, v in model.items()}
        data = {"model": arrays, "__author__": "zoo", "x": payload(marker)}
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=2)
    else:
        torch.save({"model": model, "iteration": 3, "x": payload(marker)}, path)
    # the payload really runs when unpickled without restrictions
    probe = str(marker) + ".probe"
    pickle.loads(pickle.dumps(payload(probe)))
    assert os.path.exists(probe), "test payload does not run"
    os.remove(probe)


def _refused(excinfo, path, switch):
    msg = str(excinfo.value)
    assert str(path) in msg and switch in msg, msg


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_load_checkpoint_refuses(tmp_path, payload, ext):
    src, marker = tmp_path / f"evil.{ext}", tmp_path / "marker"
    _write_malicious(src, payload, marker)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_checkpoint(src)
    _refused(e, src, TOOL_SWITCH)
    assert not marker.exists()


@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_convert_pretrain_refuses(tmp_path, ext):
    src, dst, marker = tmp_path / f"evil.{ext}", tmp_path / "out.pth", tmp_path / "marker"
    _write_malicious(src, _System, marker)
    with pytest.raises(SystemExit) as e:
        load_tool("convert_pretrain").main([str(src), str(dst), "--map", "backbone.="])
    _refused(e, src, TOOL_SWITCH)
    assert not marker.exists() and not dst.exists()


@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_convert_mae_refuses(tmp_path, ext):
    src, dst, marker = tmp_path / f"evil.{ext}", tmp_path / "out.pth", tmp_path / "marker"
    _write_malicious(src, _System, marker, model=_official_checkpoint()["model"])
    with pytest.raises(SystemExit) as e:
        load_tool("convert_mae").main([str(src), str(dst)])
    _refused(e, src, TOOL_SWITCH)
    assert not marker.exists() and not dst.exists()


def _imted_demo():
    path = os.path.join(REPO, "projects", "imTED", "run_demo.py")
    spec = importlib.util.spec_from_file_location("imted_run_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imted_demo_loader_refuses(tmp_path):
    src, dst, marker = tmp_path / "mae.pth", tmp_path / "init.pth", tmp_path / "marker"
    _write_malicious(src, _System, marker, model=_official_checkpoint()["model"])
    with pytest.raises(UnsafeCheckpointError) as e:
        _imted_demo()._convert(str(src), str(dst), encoder_only=False)
    _refused(e, src, TOOL_SWITCH)
    assert not marker.exists() and not dst.exists()


def _cfg(out):
    demo_data_root()
    return tiny_overrides(load_config(CONFIG), str(out), max_iter=1)


@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_train_init_checkpoint_refuses(tmp_path, ext):
    src, marker = tmp_path / f"evil.{ext}", tmp_path / "marker"
    _write_malicious(src, _System, marker)
    cfg = _cfg(tmp_path / "run")
    cfg.train.init_checkpoint = str(src)
    with pytest.raises(UnsafeCheckpointError) as e:
        do_train(cfg)
    _refused(e, src, TRAIN_SWITCH)
    assert not marker.exists()
    assert not (tmp_path / "run" / "model_final.pth").exists()


@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_eval_only_refuses(tmp_path, ext):
    demo_data_root()
    src, marker = tmp_path / f"evil.{ext}", tmp_path / "marker"
    _write_malicious(src, _System, marker)
    args = argument_parser().parse_args(
        [
            "--eval-only",
            "--config-file",
            os.path.join(REPO, CONFIG),
            f"train.init_checkpoint={src}",
            f"train.output_dir={tmp_path / 'eval'}",
            "train.device=cpu",
            "dataloader.test.num_workers=0",
        ]
    )
    with pytest.raises(UnsafeCheckpointError) as e:
        main(args)
    _refused(e, src, TRAIN_SWITCH)
    assert not marker.exists()
    assert not (tmp_path / "eval" / "eval_results.json").exists()


@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_resume_from_last_checkpoint_refuses(tmp_path, ext):
    out, marker = tmp_path / "run", tmp_path / "marker"
    out.mkdir()
    src = out / f"model_0000009.{ext}"
    _write_malicious(src, _System, marker)
    (out / "last_checkpoint").write_text(src.name)
    with pytest.raises(UnsafeCheckpointError) as e:
        do_train(_cfg(out), resume=True)
    _refused(e, src, TRAIN_SWITCH)
    assert not marker.exists()


def _mae_release(path):
    """An MAE full checkpoint as main_pretrain.py saves it: model, optimizer, epoch, scaler and
    the training arguments as an argparse.Namespace."""
    sd = _official_checkpoint()["model"]
    params = [nn.Parameter(v.clone()) for v in sd.values()]
    opt = torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95))
    sum(p.sum() for p in params).backward()
    opt.step()
    args = argparse.Namespace(
        model="mae_vit_base_patch16", input_size=224, mask_ratio=0.75, norm_pix_loss=True,
        blr=1.5e-3, epochs=800, output_dir="./output_dir", device="cuda", resume="",
    )  # fmt: skip
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
              "growth_interval": 2000, "_growth_tracker": 17}  # fmt: skip
    ckpt = {"model": sd, "optimizer": opt.state_dict(), "epoch": 799, "scaler": scaler}
    torch.save({**ckpt, "args": args}, path)
    return sd


def test_mae_release_with_args_still_converts(tmp_path):
    src, dst = tmp_path / "mae_visualize.pth", tmp_path / "imted.pth"
    sd = _mae_release(src)
    loaded = load_checkpoint(src)
    assert isinstance(loaded["args"], argparse.Namespace) and loaded["args"].mask_ratio == 0.75
    report = load_tool("convert_mae").main([str(src), str(dst)])
    assert report["loaded"] and not report["missing"]
    out = torch.load(dst, weights_only=True)["model"]
    assert torch.equal(out["backbone.net.blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"])


def test_imted_demo_loader_reads_an_mae_checkpoint_with_args(tmp_path):
    from detectron2.config import LazyConfig, instantiate

    demo = _imted_demo()
    mae = instantiate(LazyConfig.load(demo.MAE_CONFIG).model)
    args = argparse.Namespace(model="mae_vit_tiny", mask_ratio=0.75, epochs=1)
    torch.save({"model": mae.state_dict(), "args": args, "epoch": 0}, tmp_path / "mae.pth")
    demo._convert(str(tmp_path / "mae.pth"), str(tmp_path / "init.pth"), encoder_only=False)
    out = torch.load(tmp_path / "init.pth", weights_only=True)["model"]
    assert torch.equal(out["backbone.net.cls_token"], mae.state_dict()["cls_token"])


def test_numpy_1x_pickles_still_load(tmp_path):
    """Files written under numpy 1.x name numpy.core.multiarray (numpy 2: numpy._core)."""
    import zipfile

    data = {"model": {"w": np.arange(3, dtype=np.float32)}, "s": np.float64(2.5)}
    raw = pickle.dumps(data, protocol=2)
    old = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != raw
    (tmp_path / "old.pkl").write_bytes(old)
    torch.save(data, tmp_path / "new.pth")
    with zipfile.ZipFile(tmp_path / "new.pth") as zin:
        with zipfile.ZipFile(tmp_path / "old.pth", "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                content = zin.read(info.filename)
                if info.filename.endswith("data.pkl"):
                    content = content.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                zout.writestr(info.filename, content)
    for name in ("old.pkl", "old.pth"):
        out = load_checkpoint(tmp_path / name)
        np.testing.assert_array_equal(out["model"]["w"], data["model"]["w"])
        assert out["s"] == 2.5


class _Stem(nn.Module):
    """A model whose names match detectron2's ResNet (backbone.bottom_up.stem.conv1...)."""

    def __init__(self):
        super().__init__()
        from detectron2.modeling.backbone.resnet import BasicStem

        self.backbone = nn.Module()
        self.backbone.bottom_up = nn.Module()
        self.backbone.bottom_up.stem = BasicStem(3, 8, norm="FrozenBN")
        self.head = nn.Linear(8, 2)


def test_model_zoo_pkl_still_loads(tmp_path):
    rng = np.random.default_rng(0)
    model = _Stem()
    zoo = {
        k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()
    }
    path = tmp_path / "model_final_zoo.pkl"
    with open(path, "wb") as f:  # as detectron2's model zoo publishes them
        pickle.dump({"model": zoo, "__author__": "Detectron2 Model Zoo"}, f, protocol=2)
    D2extCheckpointer(model).load(str(path))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), zoo[k])


def test_detectron1_blobs_pkl_still_loads(tmp_path):
    """The older Caffe2 / Detectron1 layout: {"blobs": {caffe2 name: array}}, momenta dropped,
    names converted by detectron2's heuristics."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 3, 7, 7)).astype(np.float32)
    s, b = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    blobs = {"conv1_w": w, "conv1_w_momentum": w * 0, "res_conv1_bn_s": s, "res_conv1_bn_b": b}
    path = tmp_path / "R-18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    model = _Stem()
    D2extCheckpointer(model).load(str(path))
    stem = model.backbone.bottom_up.stem
    np.testing.assert_array_equal(stem.conv1.weight.detach().numpy(), w)
    np.testing.assert_array_equal(stem.conv1.norm.weight.numpy(), s)
    np.testing.assert_array_equal(stem.conv1.norm.bias.numpy(), b)


class Trusted:
    """A benign object outside the allow-list (as an older pipeline might store in meta)."""

    def __init__(self, note):
        self.note = note


@pytest.mark.parametrize("ext", ["pth", "pkl"])
def test_unsafe_switches_load_a_trusted_file(tmp_path, ext):
    src = tmp_path / f"trusted.{ext}"
    state = {"backbone.weight": torch.arange(4.0)}
    if ext == "pkl":
        with open(src, "wb") as f:
            pickle.dump({"model": {"w": np.ones(2)}, "__author__": "me", "meta": Trusted("pkl")}, f)
    else:
        torch.save({"model": state, "meta": Trusted("pth")}, src)
    with pytest.raises(UnsafeCheckpointError, match=TOOL_SWITCH):
        load_checkpoint(src)
    assert load_checkpoint(src, unsafe=True)["meta"].note == ext
    if ext == "pth":
        dst = tmp_path / "out.pth"
        argv = [str(src), str(dst), "--map", "backbone.=net."]
        with pytest.raises(SystemExit, match=TOOL_SWITCH):
            load_tool("convert_pretrain").main(argv)
        load_tool("convert_pretrain").main([*argv, "--unsafe-load"])
        assert torch.equal(
            torch.load(dst, weights_only=True)["model"]["net.weight"], state["backbone.weight"]
        )
    # training: train.unsafe_load=True
    model = nn.Module()  # nothing to fill: the load is about the file
    cfg = load_config(CONFIG)
    with pytest.raises(UnsafeCheckpointError, match=TRAIN_SWITCH.replace(".", r"\.")):
        build_checkpointer(cfg, model).load(str(src))
    cfg.train.unsafe_load = True
    assert build_checkpointer(cfg, model).load(str(src))["meta"].note == ext
