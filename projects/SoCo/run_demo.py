#!/usr/bin/env python
"""SoCo at demo scale, end to end: proposals -> pretraining -> conversion -> fine-tuning, and the
same fine-tuning from random initialisation, over several seeds; prints AP / AP50 of both.

    python projects/SoCo/run_demo.py [--seeds 0 1] [--out output/soco_demo]
    (make demo-soco)

Every step is resumable: rerunning skips finished steps (proposals in the cache, a pretraining
with model_final.pth, fine-tunings with eval_results.json) and resumes interrupted trainings
from their last checkpoint. The summary goes to <out>/summary.json.
"""

import argparse
import json
import os
import sys

# Checkout-only: the demo helpers sit beside the paper folders (projects/demo_runs.py) and
# exit with an explanation outside a d2ext source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from demo_runs import REPO, finetune_arms, print_comparison, run_train_net  # noqa: E402

CONFIGS = os.path.join(REPO, "projects", "SoCo", "configs")
PRETRAIN = os.path.join(CONFIGS, "soco_R18_FPN_4conv1fc_demo.py")
FINETUNE = os.path.join(CONFIGS, "faster_rcnn_R18_FPN_4conv1fc_demo.py")


def make_proposals(cache_dir: str, filter_name: str) -> None:
    from d2ext.proposals import dataset_items, filter_from_name, generate_proposals

    items = dataset_items("d2ext_demo_unlabeled")
    filt = filter_from_name(filter_name)
    summary = generate_proposals(items, cache_dir, filt=filt, workers=os.cpu_count() or 1)
    print(summary, flush=True)


def convert(pretrain_dir: str, dst: str) -> None:
    """The SoCo pretraining's online network -> the fine-tuning detector's checkpoint at
    ``dst`` (stops if a key does not fit the detector)."""
    from detectron2.config import LazyConfig, instantiate

    from d2ext.checkpoint import convert_checkpoint
    from d2ext.projects.soco import SOCO_TO_DETECTRON2

    detector = instantiate(LazyConfig.load(FINETUNE).model)
    try:
        _, report = convert_checkpoint(
            os.path.join(pretrain_dir, "model_final.pth"),
            SOCO_TO_DETECTRON2,
            model=detector,
            dst=dst,
            fail_on=("unexpected", "shape_mismatch"),
            meta={"source": pretrain_dir},
        )
    except ValueError as e:
        raise SystemExit(str(e)) from e
    print(report.summary(), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=os.path.join(REPO, "output", "soco_demo"))
    parser.add_argument("--pretrain-iters", type=int, default=None)
    parser.add_argument("--finetune-iters", type=int, default=None)
    parser.add_argument(
        "--filter",
        default="ratio3size0308",
        help="proposal filter (SoCo's ratio3size0308; ratio3size0008 keeps small boxes too)",
    )
    args = parser.parse_args(argv)
    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.data.datasets.demo import demo_root
    from d2ext.utils.io import atomic_write_bytes

    generate_demo_data()
    register_all_datasets()
    name = "soco_unlabeled" if args.filter == "ratio3size0308" else f"{args.filter}_unlabeled"
    cache_dir = os.path.join(demo_root(), "proposals", name)
    make_proposals(cache_dir, args.filter)

    pretrain_dir = os.path.join(args.out, "pretrain")
    if not os.path.exists(os.path.join(pretrain_dir, "model_final.pth")):
        extra = [f"dataloader.train.mapper.proposals.cache_dir={cache_dir}"]
        if args.pretrain_iters:
            extra.append(f"train.max_iter={args.pretrain_iters}")
        run_train_net(PRETRAIN, pretrain_dir, extra)
    converted = os.path.join(args.out, "soco_detectron2.pth")
    if not os.path.exists(converted):
        convert(pretrain_dir, converted)

    arms = {"SoCo": ("finetune_soco", converted), "scratch": ("finetune_scratch", "")}
    rows = finetune_arms(FINETUNE, arms, args.out, args.seeds, args.finetune_iters)
    mean = print_comparison(rows, arms)
    gain = mean["SoCo"]["AP50"] - mean["scratch"]["AP50"]
    print(f"SoCo - scratch: AP50 {gain:+.2f}, AP {mean['SoCo']['AP'] - mean['scratch']['AP']:+.2f}")
    summary = {"runs": rows, "mean": mean, "ap50_gain": gain}
    atomic_write_bytes(
        os.path.join(args.out, "summary.json"), json.dumps(summary, indent=2).encode()
    )
    return summary


if __name__ == "__main__":
    main()
