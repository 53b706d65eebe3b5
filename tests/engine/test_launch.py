"""`--num-gpus 2` without a GPU: two CPU processes over gloo train together."""

import os
import subprocess
import sys

from ..helpers import REPO, demo_data_root


def test_two_cpu_processes_with_gloo(tmp_path):
    root = demo_data_root()
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.dirname(root), PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools/train_net.py"),
        "--num-gpus",
        "2",
        "--config-file",
        os.path.join(REPO, "configs/baselines/faster_rcnn_R18_FPN_demo.py"),
        f"train.output_dir={tmp_path}",
        "train.max_iter=2",
        "train.device=cpu",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.evaluator=null",
        "train.checkpointer.period=1000",
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    assert (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "metrics.json").exists()
