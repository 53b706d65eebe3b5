"""Helpers of the demo drivers (projects/*/run_demo.py): resumable `tools/train_net.py` runs in
subprocesses and their results."""

import json
import os
import subprocess
import sys

__all__ = ["REPO", "read_eval_results", "run_train_net"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_train_net(config: str, output_dir: str, overrides=(), eval_only: bool = False) -> None:
    """Runs ``tools/train_net.py`` on ``config`` into ``output_dir`` (with ``--resume``, so an
    interrupted run continues from its last checkpoint); raises if it fails."""
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py")]
    cmd += ["--eval-only"] if eval_only else ["--resume"]
    cmd += ["--config-file", config, f"train.output_dir={output_dir}", *overrides]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def read_eval_results(output_dir: str) -> dict:
    """The ``eval_results.json`` a run wrote (raises FileNotFoundError if it has none)."""
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        return json.load(f)
