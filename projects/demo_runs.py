"""Helpers of the demo drivers (projects/*/run_demo.py): resumable `tools/train_net.py` runs in
subprocesses and their results.

Checkout-only: the demos drive this repository's ``tools/train_net.py`` and configs, which the
installed d2ext package does not carry (its configs are reached with
``d2ext.model_zoo.get_config``). Each ``run_demo.py`` imports this file from its parent folder.
"""

import json
import os
import subprocess
import sys

__all__ = [
    "REPO",
    "finetune_arms",
    "print_comparison",
    "read_eval_results",
    "run_train_net",
    "signs_backbone",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def require_checkout(root: str = REPO) -> None:
    """Exits with an explanation unless ``root`` is a d2ext source checkout (``tools/`` and
    ``configs/`` beside ``projects/``)."""
    missing = [
        p for p in ("tools/train_net.py", "configs") if not os.path.exists(os.path.join(root, p))
    ]
    if missing:
        raise SystemExit(
            f"The d2ext demos (projects/<Paper>/run_demo.py) run from a source checkout only: "
            f"{root} lacks {', '.join(missing)}. Run them in a clone of the d2ext repository "
            "(the installed package has no tools/ and no demo drivers; its configs are "
            "reached with d2ext.model_zoo.get_config)."
        )


require_checkout()


def run_train_net(config: str, output_dir: str, overrides=(), eval_only: bool = False) -> None:
    """Runs ``tools/train_net.py`` on ``config`` into ``output_dir`` (with ``--resume``, so an
    interrupted run continues from its last checkpoint); raises if it fails."""
    if not os.path.isfile(config):
        raise FileNotFoundError(f"demo config {config} not found (a checkout of d2ext has it)")
    cmd = [sys.executable, TRAIN_NET]
    cmd += ["--eval-only"] if eval_only else ["--resume"]
    cmd += ["--config-file", config, f"train.output_dir={output_dir}", *overrides]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def signs_backbone(out_dir: str, max_iter: int = 400) -> dict:
    """The demo stand-in for an ImageNet backbone: the ResNet-18 of the demo Faster R-CNN
    (configs/baselines/faster_rcnn_R18_FPN_demo.py) trained on the *signs* split, whose classes
    differ from the shapes every demo fine-tunes on. Trained into ``<out_dir>/backbone_signs``
    once (resumable); returns its ``backbone.bottom_up.*`` tensors."""
    from d2ext.checkpoint import load_checkpoint

    run_dir = os.path.join(out_dir, "backbone_signs")
    final = os.path.join(run_dir, "model_final.pth")
    if not os.path.exists(final):
        run_train_net(
            os.path.join(REPO, "configs", "baselines", "faster_rcnn_R18_FPN_demo.py"),
            run_dir,
            [
                "dataloader.train.dataset.names=d2ext_demo_signs_train",
                "dataloader.test.dataset.names=d2ext_demo_signs_val",
                f"train.max_iter={max_iter}",
            ],
        )
    state = load_checkpoint(final)["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.bottom_up.")}


def read_eval_results(output_dir: str) -> dict:
    """The ``eval_results.json`` a run wrote (raises FileNotFoundError if it has none)."""
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        return json.load(f)


def finetune_arms(config: str, arms: dict, out_dir: str, seeds, max_iter=None) -> list[dict]:
    """Fine-tunes ``config`` once per seed and arm (resumable: a run with eval results is kept).

    Args:
        arms: label -> (run-folder prefix, init checkpoint path or ""[, config]); each run
            goes to ``<out_dir>/<prefix>_seed<seed>``; an arm's own config replaces ``config``.
        max_iter: overrides the config's ``train.max_iter`` when given.

    Returns:
        One row per run: {"init": label, "seed", "AP", "AP50"}.
    """
    rows = []
    for seed in seeds:
        for label, (prefix, init, *own) in arms.items():
            run_dir = os.path.join(out_dir, f"{prefix}_seed{seed}")
            if not os.path.exists(os.path.join(run_dir, "eval_results.json")):
                extra = [f"train.seed={seed}", f"train.init_checkpoint={init}"]
                if max_iter:
                    extra.append(f"train.max_iter={max_iter}")
                run_train_net(own[0] if own else config, run_dir, extra)
            bbox = read_eval_results(run_dir)["bbox"]
            rows.append({"init": label, "seed": seed, "AP": bbox["AP"], "AP50": bbox["AP50"]})
    return rows


def print_comparison(rows: list[dict], labels, title: str = "") -> dict:
    """Prints the rows of :func:`finetune_arms` and each arm's mean; returns the means
    {label: {"AP", "AP50"}}."""
    w = max(len(label) for label in labels)
    print(f"\n{title}\n{'init':<{w}} {'seed':>4} {'AP':>6} {'AP50':>6}")
    for r in rows:
        print(f"{r['init']:<{w}} {r['seed']:>4} {r['AP']:6.2f} {r['AP50']:6.2f}")
    mean = {}
    for label in labels:
        mine = [r for r in rows if r["init"] == label]
        mean[label] = {k: sum(r[k] for r in mine) / len(mine) for k in ("AP", "AP50")}
        print(f"{label:<{w}} mean {mean[label]['AP']:6.2f} {mean[label]['AP50']:6.2f}")
    return mean
