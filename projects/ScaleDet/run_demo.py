#!/usr/bin/env python
"""ScaleDet at demo scale: one detector trained jointly on the embedded shapes and signs datasets
against each single-dataset model (same model), all scored on both val splits in their own label
spaces and zero-shot on the synonyms split, plus a random-vocabulary control for the zero-shot
numbers; over several seeds.

By default the joint model gets equal *per-dataset* iterations: twice the single models'
(1200 against 600; each image of a batch is drawn from either dataset with equal chance, so
each dataset gets, on average, as many images as its single model). --joint-1x adds the joint
model at equal *total* iterations (600).

Targets, checked on the means over seeds and printed as met / missed: the joint model within
1 AP of each single-dataset model on that model's own val split, and ahead of both on the
zero-shot synonyms split.

    python projects/ScaleDet/run_demo.py [--seeds 0 1] [--iters N] [--joint-1x]
    (make demo MODE=scaledet)

Resumable: finished runs are kept, interrupted ones continue from their last checkpoint.
Run folders: output/scaledet_demo/{joint2x, shapes, signs, joint}_seedS (joint: the 1x run).
Results: output/scaledet_demo/summary.json and the table printed at the end.
"""

import argparse
import json
import math
import os
import sys

# Checkout-only: the demo helpers sit beside the paper folders (projects/demo_runs.py) and
# exit with an explanation outside a d2ext source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from demo_runs import REPO, read_eval_results, run_train_net  # noqa: E402

CONFIGS = os.path.join(REPO, "projects", "ScaleDet", "configs")
# label -> (config, run-folder prefix <out>/<prefix>_seed<S>, text file under <out>/text,
# iterations as a multiple of the single-dataset models')
ARMS = {
    "joint 2x": ("scaledet_R18_FPN_demo.py", "joint2x", "shapes+signs.npy", 2),
    "shapes only": ("scaledet_R18_FPN_demo_shapes.py", "shapes", "shapes.npy", 1),
    "signs only": ("scaledet_R18_FPN_demo_signs.py", "signs", "signs.npy", 1),
    "joint 1x": ("scaledet_R18_FPN_demo.py", "joint", "shapes+signs.npy", 1),
}
JOINTS = ("joint 2x", "joint 1x")
TESTS = ("shapes", "signs", "synonyms")
COLS = [f"{t} {m}" for t in TESTS for m in ("AP", "AP50")] + ["random vocab AP50"]


def single_iters(iters: int | None = None) -> int:
    """The single-dataset models' iterations: ``iters``, or the demo config's
    ``train.max_iter``."""
    if iters:
        return iters
    from detectron2.config import LazyConfig

    return int(LazyConfig.load(os.path.join(CONFIGS, ARMS["shapes only"][0])).train.max_iter)


def plan(seeds, out: str, iters: int, joint_1x: bool = False) -> list[dict]:
    """The runs of the demo, in order.

    Args:
        seeds: the seeds; each runs every arm.
        out: the demo's output folder.
        iters: the single-dataset models' iterations.
        joint_1x: add the joint model at equal total iterations.

    Returns:
        One dict per run: model (arm label), seed, config, run_dir, text (the training
        vocabulary file), max_iter.
    """
    arms = [a for a in ARMS if joint_1x or a != "joint 1x"]
    runs = []
    for seed in seeds:
        for arm in arms:
            config, prefix, text, mult = ARMS[arm]
            runs.append(
                {
                    "model": arm,
                    "seed": seed,
                    "config": os.path.join(CONFIGS, config),
                    "run_dir": os.path.join(out, f"{prefix}_seed{seed}"),
                    "text": os.path.join(out, "text", text),
                    "max_iter": mult * iters,
                }
            )
    return runs


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def check_targets(mean: dict, joint: str = "joint 2x", margin: float = 1.0) -> dict:
    """The demo's targets on the means over seeds (AP).

    Args:
        mean: arm -> {column: mean}, with the single models' arms "shapes only", "signs only".
        joint: the joint arm to check.
        margin: how far (AP) the joint model may stay behind a single model on its own data.

    Returns:
        target name -> {"joint": AP, "reference": AP, "met": bool}.
    """
    out = {}
    for data in ("shapes", "signs"):
        ref = mean[f"{data} only"][f"{data} AP"]
        got = mean[joint][f"{data} AP"]
        out[f"{joint} within {margin:g} AP of {data} only on {data} val"] = {
            "joint": got,
            "reference": ref,
            "met": got >= ref - margin,
        }
    ref = max(mean[f"{d} only"]["synonyms AP"] for d in ("shapes", "signs"))
    got = mean[joint]["synonyms AP"]
    out[f"{joint} ahead of both single models on synonyms val (zero-shot)"] = {
        "joint": got,
        "reference": ref,
        "met": got > ref,
    }
    return out


def summarize(rows: list[dict]) -> dict:
    """Per-arm mean and std over seeds of every column, and the targets of every joint arm
    present."""
    mean, std = {}, {}
    for arm in ARMS:
        mine = [r for r in rows if r["model"] == arm]
        if mine:
            stats = {c: _mean_std([r[c] for r in mine]) for c in COLS}
            mean[arm] = {c: s[0] for c, s in stats.items()}
            std[arm] = {c: s[1] for c, s in stats.items()}
    targets = {j: check_targets(mean, j) for j in JOINTS if j in mean}
    return {"mean": mean, "std": std, "targets": targets}


def _random_vocabulary(path: str, labels, dim: int, seed: int) -> None:
    import numpy as np

    from d2ext.projects.scaledet import save_text_embeddings

    if not os.path.exists(path):
        emb = np.random.RandomState(seed).randn(len(labels), dim).astype(np.float32)
        save_text_embeddings(path, emb, labels, encoder_info={"backend": f"random (seed {seed})"})


def control_overrides(checkpoint: str, text: str, rand: str, common: list[str]) -> list[str]:
    """The train_net overrides of the random-vocabulary control: ``checkpoint`` evaluated on the
    synonyms split only, its vocabulary read from ``rand`` as precomputed vectors (random
    vectors have no text encoder to check them against)."""
    return [
        f"train.init_checkpoint={checkpoint}",
        f"scaledet.text.path={text}",
        *common,
        f"dataloader.tests.synonyms.context.embeddings.path={rand}",
        "dataloader.tests.synonyms.context.embeddings.backend=precomputed",
        "dataloader.tests.shapes=null",
        "dataloader.tests.signs=null",
    ]


def _run(run: dict, common: list[str]) -> dict:
    """Trains (unless finished) and scores one run of :func:`plan`, and its random-vocabulary
    control; returns its row."""
    from d2ext.projects.scaledet import dataset_label_names, read_embedding_file

    run_dir, seed, text = run["run_dir"], run["seed"], run["text"]
    if not os.path.exists(os.path.join(run_dir, "eval_results.json")):
        overrides = [f"train.seed={seed}", f"scaledet.text.path={text}", *common]
        overrides.append(f"train.max_iter={run['max_iter']}")
        run_train_net(run["config"], run_dir, overrides)
    res = read_eval_results(run_dir)
    row = {"model": run["model"], "seed": seed, "iterations": run["max_iter"]}
    for t in TESTS:
        row[f"{t} AP"], row[f"{t} AP50"] = res[t]["bbox"]["AP"], res[t]["bbox"]["AP50"]
    # zero-shot control: the same model, the synonyms' vocabulary replaced by random
    # vectors (a vocabulary swap through a train_net override)
    text_dir = os.path.dirname(text)
    names = dataset_label_names("d2ext_demo_synonyms_val")
    dim = read_embedding_file(text)[0].shape[1]
    rand = os.path.join(text_dir, f"random_synonyms_seed{seed}.npy")
    _random_vocabulary(rand, names, dim, seed)
    ctrl_dir = os.path.join(run_dir, "zeroshot_random_vocabulary")
    if not os.path.exists(os.path.join(ctrl_dir, "eval_results.json")):
        run_train_net(
            run["config"],
            ctrl_dir,
            control_overrides(os.path.join(run_dir, "model_final.pth"), text, rand, common),
            eval_only=True,
        )
    row["random vocab AP50"] = read_eval_results(ctrl_dir)["synonyms"]["bbox"]["AP50"]
    return row


def print_table(rows: list[dict], summary: dict) -> None:
    """The runs, each arm's mean +- std over seeds, and the targets as met / missed."""
    print("\n" + f"{'model':<12} {'seed':>4} {'iters':>5} " + " ".join(f"{c:>17}" for c in COLS))
    for r in rows:
        cells = " ".join(f"{r[c]:17.2f}" for c in COLS)
        print(f"{r['model']:<12} {r['seed']:>4} {r['iterations']:>5} {cells}")
    for arm, mean in summary["mean"].items():
        sd = summary["std"][arm]
        cells = " ".join(f"{f'{mean[c]:.2f} +- {sd[c]:.2f}':>17}" for c in COLS)
        print(f"{arm:<12} mean{'':>6} {cells}")
    for targets in summary["targets"].values():
        for name, t in targets.items():
            verdict = "met" if t["met"] else "missed"
            print(f"target {name}: {verdict} ({t['joint']:.2f} vs {t['reference']:.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="the single-dataset models' iterations (default: the configs' 600); the joint "
        "model gets twice as many",
    )
    parser.add_argument("--out", default=os.path.join(REPO, "output", "scaledet_demo"))
    parser.add_argument(
        "--joint-1x",
        action="store_true",
        help="also train the joint model at equal total iterations (as many as each "
        "single-dataset model; each dataset then gets half of its single model's)",
    )
    parser.add_argument(
        "--joint-2x", action="store_true", help="accepted for old command lines: now the default"
    )
    args = parser.parse_args(argv)

    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.utils.io import atomic_write_bytes

    generate_demo_data()
    register_all_datasets()
    common = [f"scaledet.text.vocab_dir={os.path.join(args.out, 'text')}"]
    runs = plan(args.seeds, args.out, single_iters(args.iters), args.joint_1x)
    rows = [_run(run, common) for run in runs]
    summary = summarize(rows)
    print_table(rows, summary)
    summary = {"runs": rows, **summary, "seeds": args.seeds}
    atomic_write_bytes(
        os.path.join(args.out, "summary.json"), json.dumps(summary, indent=1).encode()
    )
    return summary


if __name__ == "__main__":
    main()
