"""Nothing is lost when training is killed: --resume continues with the same iteration,
optimizer and scheduler state; damaged or missing checkpoints give clear errors."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from d2ext.checkpoint import D2extCheckpointer
from d2ext.engine import build_trainer, do_train

from ..helpers import REPO, demo_data_root, load_config, tiny_overrides

CONFIG = "configs/baselines/faster_rcnn_R18_FPN_demo.py"


def _cfg(out, max_iter, period):
    cfg = tiny_overrides(load_config(CONFIG), str(out), max_iter=max_iter)
    cfg.train.checkpointer.period = period
    cfg.lr_multiplier.warmup_iter = 2
    return cfg


def _state_equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_kill_9_then_resume_continues_where_it_stopped(tmp_path):
    root = demo_data_root()
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.dirname(root), PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools/train_net.py"),
        "--config-file",
        os.path.join(REPO, CONFIG),
        f"train.output_dir={out}",
        "train.max_iter=1000",
        "train.checkpointer.period=2",
        "train.device=cpu",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "lr_multiplier.warmup_iter=2",
        "lr_multiplier.steps=[]",  # constant LR after warmup: the check below is exact
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "last_checkpoint"
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and last.read_text() not in ("", "model_0000001.pth"):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training exited before it was killed"
        os.kill(proc.pid, signal.SIGKILL)  # wherever it is, maybe in the middle of a save
    finally:
        proc.kill()
        proc.wait()

    name = last.read_text()
    saved = torch.load(out / name, map_location="cpu", weights_only=False)  # complete file
    saved_iter = saved["iteration"]
    assert saved_iter >= 3

    cfg = _cfg(out, max_iter=1000, period=1000)  # the killed run's schedule
    cfg.lr_multiplier.steps = []
    trainer, checkpointer = build_trainer(cfg)
    checkpointer.resume_or_load("", resume=True)
    assert trainer.iter == saved_iter
    assert _state_equal(trainer.optimizer.state_dict(), saved["trainer"]["optimizer"])
    trainer.train(saved_iter + 1, saved_iter + 3)
    assert trainer.iter == saved_iter + 3
    # the LR schedule continued from the killed run's position, two steps further
    sched = next(h for h in trainer._hooks if type(h).__name__ == "LRScheduler").scheduler
    saved_sched = saved["trainer"]["hooks"]["LRScheduler"]
    assert saved_sched["last_epoch"] == saved_iter + 1
    assert sched.state_dict()["last_epoch"] == saved_sched["last_epoch"] + 2
    # past the 2-iteration warmup: the LR is the base LR, not a restarted warmup
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == saved_iter + 2


def test_resume_in_process_restores_state(tmp_path):
    demo_data_root()
    do_train(_cfg(tmp_path, max_iter=4, period=2))
    ckpt = torch.load(tmp_path / "model_0000001.pth", map_location="cpu", weights_only=False)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    trainer, checkpointer = build_trainer(_cfg(tmp_path, max_iter=4, period=2))
    checkpointer.resume_or_load("", resume=True)
    assert trainer.iter == 1
    assert _state_equal(trainer.optimizer.state_dict(), ckpt["trainer"]["optimizer"])
    assert _state_equal(trainer.model.state_dict(), ckpt["model"])


def test_damaged_and_missing_checkpoints_raise_clear_errors(tmp_path):
    demo_data_root()
    cfg = _cfg(tmp_path, max_iter=2, period=1)
    (tmp_path / "model_0000005.pth").write_bytes(b"\x80\x02this is not a checkpoint")
    (tmp_path / "last_checkpoint").write_text("model_0000005.pth")
    with pytest.raises(RuntimeError, match="unreadable or truncated"):
        do_train(cfg, resume=True)
    (tmp_path / "last_checkpoint").write_text("model_0009999.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        do_train(cfg, resume=True)
    cfg.train.init_checkpoint = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        D2extCheckpointer(torch.nn.Linear(1, 1)).load(cfg.train.init_checkpoint)


def test_save_is_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = D2extCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001")

    def boom(*a, **k):
        raise KeyboardInterrupt  # a kill in the middle of torch.save

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000002")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
