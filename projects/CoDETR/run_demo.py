#!/usr/bin/env python
"""Co-DETR at demo scale, over several seeds, AP / AP50 on the demo shapes at equal training
iterations:

- ``--pair codetr`` (default): Co-Deformable-DETR against its plain base detector (two-stage
  Deformable DETR); output/codetr_demo;
- ``--pair codino``: Co-DINO against its base detector DINO, and DINO against Deformable DETR
  (a report); output/codino_demo.

    python projects/CoDETR/run_demo.py [--pair codetr|codino] [--seeds 0 1] [--iters N]
    (make demo MODE=codetr / MODE=codino)

Every arm starts from the same ResNet-18 trained by the demo Faster R-CNN on the *signs* split
(the stand-in for an ImageNet backbone; made once per output folder, shared with the AlignDet
demo's recipe), with random transformer and heads. Every run is resumable; finished runs are
kept.
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
DINO = os.path.join(CONFIGS, "dino_R18_demo.py")
CO_DINO = os.path.join(CONFIGS, "co_dino_R18_demo.py")
# --pair: (arms as label -> (run-folder prefix, config), the (better, base) labels of the target
# comparison, the default output folder)
PAIRS = {
    "codetr": (
        {"Deformable DETR": ("deformable_detr", BASE), "Co-DETR": ("co_deformable_detr", CO)},
        ("Co-DETR", "Deformable DETR"),
        "codetr_demo",
    ),
    "codino": (
        {
            "DINO": ("dino", DINO),
            "Co-DINO": ("co_dino", CO_DINO),
            "Deformable DETR": ("deformable_detr", BASE),
        },
        ("Co-DINO", "DINO"),
        "codino_demo",
    ),
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pair", choices=sorted(PAIRS), default="codetr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=None, help="default: output/<pair>_demo")
    parser.add_argument("--backbone-iters", type=int, default=400)
    parser.add_argument("--iters", type=int, default=None, help="overrides both configs' max_iter")
    args = parser.parse_args(argv)
    pair_arms, (better, base), folder = PAIRS[args.pair]
    if args.out is None:
        args.out = os.path.join(REPO, "output", folder)

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

    arms = {label: (prefix, init, cfg) for label, (prefix, cfg) in pair_arms.items()}
    rows = finetune_arms(BASE, arms, args.out, args.seeds, args.iters)
    mean = print_comparison(rows, arms, title=f"{better} vs its base detector (demo shapes val)")
    gain = mean[better]["AP"] - mean[base]["AP"]
    print(f"{better} - {base}: AP {gain:+.2f}")
    summary = {"runs": rows, "mean": mean, "ap_gain": gain}
    if args.pair == "codino":  # a report, not a target
        summary["dino_vs_deformable_detr_ap"] = mean["DINO"]["AP"] - mean["Deformable DETR"]["AP"]
        print(f"DINO - Deformable DETR: AP {summary['dino_vs_deformable_detr_ap']:+.2f}")
    atomic_write_bytes(
        os.path.join(args.out, "summary.json"), json.dumps(summary, indent=2).encode()
    )
    return summary


if __name__ == "__main__":
    main()
