#!/usr/bin/env python
"""imTED at demo scale: a compact MAE pretrained on the embedded images, then the same Faster
R-CNN fine-tuned on the shapes split twice from that one checkpoint: imTED (encoder and decoder
migrated: the box head is the MAE decoder) against the encoder-only baseline (box head randomly
initialised), at equal iterations, over several seeds; prints AP / AP50 of both.

    python projects/imTED/run_demo.py [--seeds 0 1] [--mae-iters N] [--iters N]
    (make demo MODE=imted)

Resumable: finished steps are kept, interrupted trainings continue from their last checkpoint.
Results: output/imted_demo/summary.json.
"""

import argparse
import json
import os
import sys

# Checkout-only: the demo helpers sit beside the paper folders (projects/demo_runs.py) and
# exit with an explanation outside a d2ext source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from demo_runs import REPO, finetune_arms, print_comparison, run_train_net  # noqa: E402

CONFIGS = os.path.join(REPO, "projects", "imTED", "configs")
MAE_CONFIG = os.path.join(CONFIGS, "mae_vit_tiny_demo.py")
DETECTOR = os.path.join(CONFIGS, "imted_faster_rcnn_vit_tiny_demo.py")
ARM_FOLDERS = {"imTED": "imted", "encoder only": "encoder_only"}


def _convert(mae_ckpt: str, out: str, encoder_only: bool, unsafe: bool = False) -> None:
    """The MAE pretraining checkpoint -> the detector's checkpoint at ``out`` (imTED: encoder
    and decoder; ``encoder_only``: the baseline); stops if a key does not fit the detector."""
    from detectron2.config import LazyConfig, instantiate

    from d2ext.projects.imted import mae_to_imted

    if os.path.exists(out):
        return
    model = instantiate(LazyConfig.load(DETECTOR).model)
    try:
        _, report = mae_to_imted(
            mae_ckpt,
            model,
            load_decoder=not encoder_only,
            dst=out,
            fail_on=("missing", "unexpected", "shape_mismatch"),
            meta={"__author__": f"run_demo from {mae_ckpt}"},
            unsafe=unsafe,
        )
    except ValueError as e:
        raise SystemExit(f"the MAE checkpoint does not fit the detector: {e}") from e
    print(("encoder only: " if encoder_only else "imTED: ") + report.summary(), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--mae-iters", type=int, default=None, help="default: the config's")
    parser.add_argument("--iters", type=int, default=None, help="fine-tuning; default: config's")
    parser.add_argument("--out", default=os.path.join(REPO, "output", "imted_demo"))
    parser.add_argument(
        "--unsafe-load", action="store_true", help="unpickle the MAE checkpoint without limits"
    )
    args = parser.parse_args(argv)

    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.utils.io import atomic_write_bytes

    generate_demo_data()
    register_all_datasets()
    mae_dir = os.path.join(args.out, "mae")
    if not os.path.exists(os.path.join(mae_dir, "model_final.pth")):
        extra = [f"train.max_iter={args.mae_iters}"] if args.mae_iters else []
        run_train_net(MAE_CONFIG, mae_dir, extra)
    mae_ckpt = os.path.join(mae_dir, "model_final.pth")
    inits = {
        "imTED": os.path.join(args.out, "imted_init.pth"),
        "encoder only": os.path.join(args.out, "encoder_only_init.pth"),
    }
    _convert(mae_ckpt, inits["imTED"], encoder_only=False, unsafe=args.unsafe_load)
    _convert(mae_ckpt, inits["encoder only"], encoder_only=True, unsafe=args.unsafe_load)

    arms = {label: (prefix, inits[label]) for label, prefix in ARM_FOLDERS.items()}
    rows = finetune_arms(DETECTOR, arms, args.out, args.seeds, args.iters)
    mean = print_comparison(rows, arms)
    gain = mean["imTED"]["AP"] - mean["encoder only"]["AP"]
    print(f"imTED - encoder only: AP {gain:+.2f}")
    summary = {"runs": rows, "mean": mean, "ap_gain": gain, "seeds": args.seeds}
    path = os.path.join(args.out, "summary.json")
    atomic_write_bytes(path, json.dumps(summary, indent=1).encode())
    return summary


if __name__ == "__main__":
    main()
