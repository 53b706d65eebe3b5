#!/usr/bin/env python
"""Co-DETR at demo scale: Co-Deformable-DETR against its plain base detector (two-stage
Deformable DETR) at equal training iterations on the demo shapes, over several seeds; prints
AP / AP50 of both.

    python projects/CoDETR/run_demo.py [--seeds 0 1] [--iters N]   (make demo MODE=codetr)

Both start from the same ResNet-18 trained by the demo Faster R-CNN on the *signs* split (the
stand-in for an ImageNet backbone; made once, shared with the AlignDet demo's recipe), with
random transformer and heads. Every run is resumable; finished runs are kept.
"""

import argparse
import json
import os
import sys

# Checkout-only: the demo helpers sit beside the paper folders (projects/demo_runs.py) and
# exit with an explanation outside a d2ext source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from demo_runs import REPO, finetune_arms, print_comparison, signs_backbone  # noqa: E402

CONFIGS = os.path.join(REPO, "projects", "CoDETR", "configs")
BASE = os.path.join(CONFIGS, "deformable_detr_R18_demo.py")
CO = os.path.join(CONFIGS, "co_deformable_detr_R18_demo.py")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=os.path.join(REPO, "output", "codetr_demo"))
    parser.add_argument("--backbone-iters", type=int, default=400)
    parser.add_argument("--iters", type=int, default=None, help="overrides both configs' max_iter")
    args = parser.parse_args(argv)

    from d2ext.checkpoint.convert import save_detectron2_checkpoint
    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.utils.io import atomic_write_bytes

    generate_demo_data()
    register_all_datasets()
    init = os.path.join(args.out, "backbone_init.pth")
    if not os.path.exists(init):
        state = signs_backbone(args.out, args.backbone_iters)
        # the FPN detector's backbone.bottom_up is the DETRs' backbone
        state = {"backbone." + k[len("backbone.bottom_up.") :]: v for k, v in state.items()}
        save_detectron2_checkpoint(init, state, source=os.path.join(args.out, "backbone_signs"))

    arms = {
        "Deformable DETR": ("deformable_detr", init, BASE),
        "Co-DETR": ("co_deformable_detr", init, CO),
    }
    rows = finetune_arms(BASE, arms, args.out, args.seeds, args.iters)
    mean = print_comparison(rows, arms, title="Co-DETR vs its base detector (demo shapes val)")
    gain = mean["Co-DETR"]["AP"] - mean["Deformable DETR"]["AP"]
    print(f"Co-DETR - Deformable DETR: AP {gain:+.2f}")
    summary = {"runs": rows, "mean": mean, "ap_gain": gain}
    atomic_write_bytes(
        os.path.join(args.out, "summary.json"), json.dumps(summary, indent=2).encode()
    )
    return summary


if __name__ == "__main__":
    main()
