"""Nothing lost silently: an earlier run is not overwritten, stale temporaries go, metrics.json
does not repeat iterations after a resume, files get the umask, a checkpoint of another model
stops training, and overrides are checked."""

import json
import os
import stat

import pytest
import torch
from torch import nn

from d2ext.checkpoint import D2extCheckpointer
from d2ext.checkpoint.checkpointer import PartialLoadError
from d2ext.engine import build_trainer, do_train, setup_config
from d2ext.engine.train_loop import ConfigKeyError
from d2ext.utils.io import atomic_write_bytes

from ..helpers import REPO, demo_data_root, load_config, tiny_overrides

CONFIG = "configs/baselines/faster_rcnn_R18_FPN_demo.py"


def _cfg(out, max_iter=1, period=1000):
    demo_data_root()
    cfg = tiny_overrides(load_config(CONFIG), str(out), max_iter=max_iter)
    cfg.train.checkpointer.period = period
    cfg.lr_multiplier.warmup_iter = 1
    return cfg


def test_folder_with_checkpoints_needs_resume_or_overwrite(tmp_path):
    old = tmp_path / "model_0000004.pth"
    old.write_bytes(b"earlier run")
    (tmp_path / "last_checkpoint").write_text(old.name)
    with pytest.raises(FileExistsError) as e:
        do_train(_cfg(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "--resume" in msg and "train.overwrite=True" in msg
    assert old.read_bytes() == b"earlier run"
    assert (tmp_path / "last_checkpoint").read_text() == old.name
    assert not (tmp_path / "model_final.pth").exists()
    # explicit overwrite: the new run replaces it
    cfg = _cfg(tmp_path)
    cfg.train.overwrite = True
    do_train(cfg)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    # a folder without checkpoints (e.g. only a log of a run killed early) is fine
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "log.txt").write_text("killed before the first checkpoint\n")
    do_train(_cfg(fresh))
    assert (fresh / "model_final.pth").exists()


def test_resume_drops_temporaries_and_repeated_metrics(tmp_path):
    do_train(_cfg(tmp_path, max_iter=4, period=2))  # checkpoints after iterations 1 and 3
    metrics = tmp_path / "metrics.json"
    iters = [json.loads(x)["iteration"] for x in metrics.read_text().splitlines()]
    assert iters == [0, 1, 2, 3]
    # a kill after iteration 3 was logged, before its checkpoint: the run resumes at 2
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    with open(metrics, "a") as f:
        f.write('{"iteration": 4, "total_lo')  # a line cut by the kill
    stale = tmp_path / ".model_0000003.pth.k2j4h5g6.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = [tmp_path / ".notes.tmp", tmp_path / "model_0000003.pth.tmp", tmp_path / "x.tmp"]
    for p in keep:
        p.write_text("not ours")
    trainer = do_train(_cfg(tmp_path, max_iter=4, period=2), resume=True)
    assert trainer.start_iter == 2
    assert not stale.exists() and all(p.exists() for p in keep)
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]


def test_written_files_get_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(str(tmp_path / "a.json"), b"{}")
        D2extCheckpointer(nn.Linear(2, 2), str(tmp_path)).save("model_0000001")
        for name in ("a.json", "model_0000001.pth", "last_checkpoint"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o640, name
        os.umask(0o002)
        atomic_write_bytes(str(tmp_path / "a.json"), b"[]")
        assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o664
    finally:
        os.umask(old)


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.small = nn.Linear(10, 10)  # 110 values
        self.large = nn.Linear(10, 24)  # 264 values: small is 29.4% of the model


def test_partial_load_threshold_counts_parameter_values(tmp_path):
    src = _TwoLayers()
    path = tmp_path / "small_only.pth"
    torch.save({"model": {f"small.{k}": v for k, v in src.small.state_dict().items()}}, path)
    with pytest.raises(PartialLoadError, match=r"29\.4%") as e:
        D2extCheckpointer(_TwoLayers(), min_loaded_fraction=0.5).load(str(path))
    msg = str(e.value)
    assert "loaded parameters: 2" in msg and "missing parameters: 2" in msg
    assert "large.weight" in msg and "train.allow_partial_init=True" in msg
    model = _TwoLayers()
    D2extCheckpointer(model, min_loaded_fraction=0.25).load(str(path))
    assert torch.equal(model.small.weight, src.small.weight)
    D2extCheckpointer(_TwoLayers()).load(str(path))  # 0: no check (detectron2's behaviour)


def test_checkpoint_of_another_model_stops_training(tmp_path):
    path = tmp_path / "codetr.pth"
    other = {
        "transformer.decoder.layers.0.self_attn.in_proj_weight": torch.zeros(768, 256),
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(64, 3, 3, 3),  # another shape
    }
    torch.save({"model": other}, path)
    cfg = _cfg(tmp_path / "run")
    cfg.train.init_checkpoint = str(path)
    with pytest.raises(PartialLoadError) as e:
        do_train(cfg)
    msg = str(e.value)
    assert str(path) in msg and "filled 0.0%" in msg
    assert "loaded parameters: 0" in msg and "unexpected keys: 1" in msg
    assert "shape mismatch: 1 (e.g. backbone.bottom_up.stem.conv1.weight" in msg
    assert not (tmp_path / "run" / "model_final.pth").exists()
    cfg.train.allow_partial_init = True
    do_train(cfg)
    assert (tmp_path / "run" / "model_final.pth").exists()


def _setup(*opts):
    return setup_config(os.path.join(REPO, CONFIG), list(opts))


def test_unknown_override_names_the_closest_key():
    with pytest.raises(ConfigKeyError, match="closest existing key is train.max_iter"):
        _setup("train.max_itr=5")
    with pytest.raises(KeyError, match="closest existing key is model.roi_heads.num_classes"):
        _setup("model.roi_heads.num_classs=3")
    with pytest.raises(KeyError, match="train.max_iter holds .*, not a config"):
        _setup("train.max_iter.x=1")
    # an argument the LazyCall's target accepts but the config does not set is not a typo
    cfg = load_config(CONFIG)
    assert "proposal_append_gt" not in cfg.model.roi_heads
    assert (
        _setup("model.roi_heads.proposal_append_gt=False").model.roi_heads.proposal_append_gt
        is False
    )


def test_override_values_are_type_checked():
    with pytest.raises(ValueError, match="train.max_iter='abc': expected an int"):
        _setup("train.max_iter=abc")
    with pytest.raises(ValueError, match="expected an int"):
        _setup("train.max_iter=1.5")
    with pytest.raises(ValueError, match="expected true or false"):
        _setup("train.amp.enabled=1")
    with pytest.raises(ValueError, match="expected a string"):
        _setup("train.device=0")
    cfg = _setup(
        "optimizer.lr=1", "train.max_iter=5", "train.amp.enabled=false", "lr_multiplier.steps=[]"
    )
    assert cfg.optimizer.lr == 1 and cfg.train.max_iter == 5 and cfg.train.amp.enabled is False


def test_float_accepted_where_the_target_takes_a_float():
    imted = os.path.join(REPO, "projects/imTED/configs/imted_faster_rcnn_vit_tiny_demo.py")
    cfg = setup_config(imted, ["model.backbone.net.mlp_ratio=2.5"])  # the config holds int 4
    assert cfg.model.backbone.net.mlp_ratio == 2.5
    with pytest.raises(ValueError, match="expected an int"):
        setup_config(imted, ["model.backbone.net.depth=2.5"])


@pytest.mark.parametrize("spelling", ["None", "null"])
def test_none_override_means_none(spelling):
    cfg = _setup(f"dataloader.evaluator={spelling}", f"train.checkpointer.max_to_keep={spelling}")
    assert cfg.dataloader.evaluator is None and cfg.train.checkpointer.max_to_keep is None


def test_checkpointer_period_zero_disables_periodic_checkpoints(tmp_path):
    cfg = _cfg(tmp_path, max_iter=3, period=0)
    do_train(cfg)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_final.pth"]
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 2
    cfg.train.checkpointer.period = -1
    with pytest.raises(ValueError, match="period must be >= 0"):
        build_trainer(cfg)
