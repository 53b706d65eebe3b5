#!/usr/bin/env python
"""ScaleDet at demo scale: one detector trained jointly on the embedded shapes and signs datasets
against each single-dataset model (same model, same iterations), all scored on both val
splits in their own label spaces and zero-shot on the synonyms split, plus a random-vocabulary
control for the zero-shot numbers; over several seeds.

    python projects/ScaleDet/run_demo.py [--seeds 0 1] [--iters N]   (make demo MODE=scaledet)

Resumable: finished runs are kept, interrupted ones continue from their last checkpoint.
Results: output/scaledet_demo/summary.json and the table printed at the end.
"""

import argparse
import json
import os
import sys

# Checkout-only: the demo helpers sit beside the paper folders (projects/demo_runs.py) and
# exit with an explanation outside a d2ext source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from demo_runs import REPO, read_eval_results, run_train_net  # noqa: E402

CONFIGS = os.path.join(REPO, "projects", "ScaleDet", "configs")
ARMS = {
    "joint": "scaledet_R18_FPN_demo.py",
    "shapes only": "scaledet_R18_FPN_demo_shapes.py",
    "signs only": "scaledet_R18_FPN_demo_signs.py",
}
TESTS = ("shapes", "signs", "synonyms")


def _random_vocabulary(path: str, labels, dim: int, seed: int) -> None:
    import numpy as np

    from d2ext.projects.scaledet import save_text_embeddings

    if not os.path.exists(path):
        emb = np.random.RandomState(seed).randn(len(labels), dim).astype(np.float32)
        save_text_embeddings(path, emb, labels, encoder_info={"backend": f"random (seed {seed})"})


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iters", type=int, default=None, help="default: the configs' 600")
    parser.add_argument("--out", default=os.path.join(REPO, "output", "scaledet_demo"))
    parser.add_argument(
        "--joint-2x",
        action="store_true",
        help="also train the joint model for twice the iterations (each dataset then gets "
        "as many iterations as its single-dataset model)",
    )
    args = parser.parse_args(argv)

    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.projects.scaledet import dataset_label_names, read_embedding_file

    generate_demo_data()
    register_all_datasets()
    text_dir = os.path.join(args.out, "text")
    common = [f"scaledet.text.vocab_dir={text_dir}"]
    if args.iters:
        common.append(f"train.max_iter={args.iters}")
    rows = []
    arms = dict(ARMS)
    if args.joint_2x:
        arms["joint 2x"] = ARMS["joint"]
    for seed in args.seeds:
        for arm, config in arms.items():
            tag = "joint2x" if arm == "joint 2x" else arm.split()[0]
            run_dir = os.path.join(args.out, f"{tag}_seed{seed}")
            text = os.path.join(text_dir, f"{arm.split()[0]}.npy")
            if arm.startswith("joint"):
                text = os.path.join(text_dir, "shapes+signs.npy")
            if not os.path.exists(os.path.join(run_dir, "eval_results.json")):
                overrides = [f"train.seed={seed}", f"scaledet.text.path={text}", *common]
                if arm == "joint 2x":
                    overrides.append(f"train.max_iter={2 * (args.iters or 600)}")
                run_train_net(os.path.join(CONFIGS, config), run_dir, overrides)
            res = read_eval_results(run_dir)
            row = {"model": arm, "seed": seed}
            for t in TESTS:
                row[f"{t} AP"], row[f"{t} AP50"] = res[t]["bbox"]["AP"], res[t]["bbox"]["AP50"]
            # zero-shot control: the same model, the synonyms' vocabulary replaced by random
            # vectors (a vocabulary swap through a train_net override)
            names = dataset_label_names("d2ext_demo_synonyms_val")
            dim = read_embedding_file(text)[0].shape[1]
            rand = os.path.join(text_dir, f"random_synonyms_seed{seed}.npy")
            _random_vocabulary(rand, names, dim, seed)
            ctrl_dir = os.path.join(run_dir, "zeroshot_random_vocabulary")
            if not os.path.exists(os.path.join(ctrl_dir, "eval_results.json")):
                run_train_net(
                    os.path.join(CONFIGS, config),
                    ctrl_dir,
                    [
                        f"train.init_checkpoint={os.path.join(run_dir, 'model_final.pth')}",
                        f"scaledet.text.path={text}",
                        *common,
                        f"dataloader.tests.synonyms.context.embeddings.path={rand}",
                        "dataloader.tests.shapes=null",
                        "dataloader.tests.signs=null",
                    ],
                    eval_only=True,
                )
            row["random vocab AP50"] = read_eval_results(ctrl_dir)["synonyms"]["bbox"]["AP50"]
            rows.append(row)

    cols = [f"{t} {m}" for t in TESTS for m in ("AP", "AP50")] + ["random vocab AP50"]
    print("\n" + f"{'model':<12} {'seed':>4} " + " ".join(f"{c:>17}" for c in cols))
    for r in rows:
        print(f"{r['model']:<12} {r['seed']:>4} " + " ".join(f"{r[c]:17.2f}" for c in cols))
    mean = {}
    for arm in arms:
        mine = [r for r in rows if r["model"] == arm]
        mean[arm] = {c: sum(r[c] for r in mine) / len(mine) for c in cols}
        print(f"{arm:<12} mean " + " ".join(f"{mean[arm][c]:17.2f}" for c in cols))
    summary = {"runs": rows, "mean": mean, "seeds": args.seeds}
    from d2ext.utils.io import atomic_write_bytes

    atomic_write_bytes(
        os.path.join(args.out, "summary.json"), json.dumps(summary, indent=1).encode()
    )
    return summary


if __name__ == "__main__":
    main()
