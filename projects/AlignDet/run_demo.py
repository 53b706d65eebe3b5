#!/usr/bin/env python
"""AlignDet at demo scale, end to end, for one detector: backbone -> proposals -> box-domain
pretraining -> extraction -> fine-tuning, against fine-tuning with the same backbone and random
neck and heads, over several seeds; prints AP / AP50 of both.

    python projects/AlignDet/run_demo.py [--detector faster_rcnn|retinanet|fcos|detr] [--seeds 0 1]
    (make demo MODE=aligndet)

The backbone (frozen in pretraining, the same in both fine-tunings) is a ResNet-18 trained by
the demo Faster R-CNN on the *signs* split (other classes than the fine-tuning's shapes): the
stand-in for the ImageNet backbone AlignDet starts from. Every step is resumable.
"""

import argparse
import json
import os
import sys

# Checkout-only: the demo helpers sit beside the paper folders (projects/demo_runs.py) and
# exit with an explanation outside a d2ext source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from demo_runs import (  # noqa: E402
    REPO,
    finetune_arms,
    print_comparison,
    run_train_net,
    signs_backbone,
)

CONFIGS = os.path.join(REPO, "projects", "AlignDet", "configs")
DETECTORS = {
    "faster_rcnn": ("aligndet_faster_rcnn_R18_FPN_demo.py", "faster_rcnn_R18_FPN_demo_finetune.py"),
    "retinanet": ("aligndet_retinanet_R18_FPN_demo.py", "retinanet_R18_FPN_demo_finetune.py"),
    "fcos": ("aligndet_fcos_R18_FPN_demo.py", "fcos_R18_FPN_demo_finetune.py"),
    "detr": ("aligndet_deformable_detr_R18_demo.py", "deformable_detr_R18_demo_finetune.py"),
}


def _save(path: str, state: dict, source: str) -> None:
    from d2ext.checkpoint.convert import save_detectron2_checkpoint

    save_detectron2_checkpoint(path, state, source=source)


def extract(pretrain_dir: str, finetune_config: str, dst: str) -> None:
    """The AlignDet pretraining's online detector -> the fine-tuning detector's checkpoint at
    ``dst`` (stops if a key does not fit the detector)."""
    from detectron2.config import LazyConfig, instantiate

    from d2ext.projects.aligndet import extract_aligndet

    try:
        _, report = extract_aligndet(
            os.path.join(pretrain_dir, "model_final.pth"),
            model=instantiate(LazyConfig.load(finetune_config).model),
            dst=dst,
            fail_on=("unexpected", "shape_mismatch"),
            meta={"source": pretrain_dir},
        )
    except ValueError as e:
        raise SystemExit(str(e)) from e
    print(report.summary(), "missing:", report.missing, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detector", choices=sorted(DETECTORS), default="faster_rcnn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=os.path.join(REPO, "output", "aligndet_demo"))
    parser.add_argument("--backbone-iters", type=int, default=400)
    parser.add_argument("--pretrain-iters", type=int, default=None)
    parser.add_argument("--finetune-iters", type=int, default=None)
    args = parser.parse_args(argv)

    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.data.datasets.demo import demo_root
    from d2ext.projects.aligndet import backbone_init_for_aligndet
    from d2ext.proposals import ALIGNDET_FILTER, dataset_items, generate_proposals
    from d2ext.utils.io import atomic_write_bytes

    generate_demo_data()
    register_all_datasets()
    pretrain_cfg, finetune_cfg = (os.path.join(CONFIGS, c) for c in DETECTORS[args.detector])

    # 1. the backbone: supervised on the signs split, shared by every detector and seed
    backbone_dir = os.path.join(args.out, "backbone_signs")
    backbone_state = signs_backbone(args.out, args.backbone_iters)
    prefix, tag = "backbone.bottom_up.", ""
    if args.detector == "detr":  # the DETR's ResNet is its whole `backbone`
        backbone_state = {"backbone." + k[len(prefix) :]: v for k, v in backbone_state.items()}
        prefix, tag = "backbone.", "_detr"
    backbone_only = os.path.join(args.out, f"backbone_only{tag}.pth")
    if not os.path.exists(backbone_only):
        _save(backbone_only, backbone_state, backbone_dir)
    pretrain_init = os.path.join(args.out, f"aligndet_init{tag}.pth")
    if not os.path.exists(pretrain_init):
        _save(pretrain_init, backbone_init_for_aligndet(backbone_state, prefix), backbone_dir)

    # 2. proposals (AlignDet's ratio3size0008 filter) of the unlabeled pool
    cache_dir = os.path.join(demo_root(), "proposals", "aligndet_unlabeled")
    items = dataset_items("d2ext_demo_unlabeled")
    print(generate_proposals(items, cache_dir, filt=ALIGNDET_FILTER, workers=os.cpu_count() or 1))

    # 3. box-domain pretraining, 4. extraction
    run = os.path.join(args.out, args.detector)
    pretrain_dir = os.path.join(run, "pretrain")
    if not os.path.exists(os.path.join(pretrain_dir, "model_final.pth")):
        extra = [
            f"train.init_checkpoint={pretrain_init}",
            f"dataloader.train.mapper.proposals.cache_dir={cache_dir}",
        ]
        if args.pretrain_iters:
            extra.append(f"train.max_iter={args.pretrain_iters}")
        run_train_net(pretrain_cfg, pretrain_dir, extra)
    extracted = os.path.join(run, "aligndet_detectron2.pth")
    if not os.path.exists(extracted):
        extract(pretrain_dir, finetune_cfg, extracted)

    # 5. fine-tuning from AlignDet and from the backbone alone
    arms = {
        "AlignDet": ("finetune_aligndet", extracted),
        "backbone only": ("finetune_baseline", backbone_only),
    }
    rows = finetune_arms(finetune_cfg, arms, run, args.seeds, args.finetune_iters)
    mean = print_comparison(rows, arms, title=args.detector)
    gain = mean["AlignDet"]["AP"] - mean["backbone only"]["AP"]
    print(f"AlignDet - baseline: AP {gain:+.2f}")
    summary = {"detector": args.detector, "runs": rows, "mean": mean, "ap_gain": gain}
    atomic_write_bytes(os.path.join(run, "summary.json"), json.dumps(summary, indent=2).encode())
    return summary


if __name__ == "__main__":
    main()
