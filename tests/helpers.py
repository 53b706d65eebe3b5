"""Shared helpers of the test suite: the demo data once per session, tiny config overrides."""

import os

from detectron2.config import LazyConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_data_root() -> str:
    """Generates the demo data under $DETECTRON2_DATASETS/d2ext_demo (default ./datasets) unless
    it is already complete there, registers it, and returns its folder."""
    from d2ext.data.datasets import register_demo_datasets
    from d2ext.data.datasets.demo import generate_demo_data

    root = generate_demo_data()
    register_demo_datasets(root)
    return root


def tiny_overrides(cfg, output_dir: str, max_iter: int = 1):
    """CPU, a batch of 2 in the main process, no evaluation, short schedule."""
    cfg.train.device = "cpu"
    cfg.train.output_dir = output_dir
    cfg.train.max_iter = max_iter
    cfg.train.log_period = 1
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    heads = cfg.model.get("roi_heads")
    if heads is not None and "batch_size_per_image" in heads:
        heads.batch_size_per_image = 16  # heavy box heads (imTED's decoder) cost per RoI
    for key in ("evaluator", "tests"):
        if key in cfg.dataloader:
            del cfg.dataloader[key]
    return cfg


def load_config(rel_path: str):
    return LazyConfig.load(os.path.join(REPO, rel_path))


def load_tool(name: str):
    """The module of ``tools/<name>.py`` (tools are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_two_gloo_processes(config: str, output_dir, overrides: list[str]) -> list[dict]:
    """Runs ``tools/train_net.py --num-gpus 2`` on CPU (two gloo processes) with ``config``
    (relative to the repository) and ``overrides``; checks it succeeded with world size 2 and
    returns the rows of its metrics.json."""
    import json
    import subprocess
    import sys

    root = demo_data_root()
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.dirname(root), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.join(REPO, "tools/train_net.py"), "--num-gpus", "2"]
    cmd += ["--config-file", os.path.join(REPO, config), f"train.output_dir={output_dir}"]
    cmd += ["train.device=cpu", *overrides]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "World size: 2" in open(os.path.join(output_dir, "log.txt")).read()
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]
