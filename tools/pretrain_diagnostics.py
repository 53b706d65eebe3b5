#!/usr/bin/env python
"""Shows whether a SoCo / AlignDet pretraining learned what it should: cross-view box retrieval
top-1 (pretrained vs a random network of the same config vs chance), AlignDet's class-agnostic
AR@100 of the detector's own boxes against held-out pseudo boxes and ground truth, and the
run's loss curves.

    python tools/pretrain_diagnostics.py --config PRETRAIN_CONFIG --checkpoint model_final.pth \\
        [--random-control] [--control-init INIT.pth] \\
        [--dataset d2ext_demo_unlabeled_large_heldout ...] \\
        [--proposals DIR [--make-proposals FILTER]] [--reference[-continuous] NAME=DIR ...] \\
        [--gt-dataset d2ext_demo_shapes_val ... | --no-gt] [--num-images N] [--batch-size B] \\
        [--seed 0] [--metrics metrics.json] --out DIR [path.key=value ...]

Batches come from the config's own pretraining mapper on the held-out images (--dataset: any
registered dataset; its proposals in --proposals, made there first with --make-proposals
ratio3size0308 / ratio3size0008 when missing). Retrieval: for every box seen in both views of a
batch, is its view-2 embedding the most similar (cosine) to its view-1 embedding among all
boxes of the batch? The embeddings are the ones the loss compares (SoCo: online predictor output
on V1 vs target projector output on V2 / V3; AlignDet: the online detector's projector
embeddings on view 1 vs the momentum detector's on view 2, averaged per box); chance is
1 / boxes per batch. AR@100: detectron2's box-proposal recall at IoU 0.50:0.05:0.95. Writes
DIR/pretrain_diagnostics.json, DIR/loss_curves.png (from the checkpoint's metrics.json) and
prints a table.
"""

import argparse
import json
import os
import sys

DEFAULT_DATASET = "d2ext_demo_unlabeled_large_heldout"
DEFAULT_GT_DATASET = "d2ext_demo_shapes_val"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="the pretraining LazyConfig (.py)")
    parser.add_argument("--checkpoint", help="its checkpoint (model_final.pth)")
    parser.add_argument(
        "--random-control",
        action="store_true",
        help="also measure a randomly initialised model of the same config on the same batches",
    )
    parser.add_argument(
        "--control-init",
        help="checkpoint loaded into the random control (e.g. AlignDet's backbone-only start)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        help="registered dataset of held-out unlabeled images (repeat for several; default: "
        f"{DEFAULT_DATASET})",
    )
    parser.add_argument("--proposals", help="proposal cache of those images (default: config's)")
    parser.add_argument(
        "--make-proposals",
        metavar="FILTER",
        help="first generate the images' missing proposals into --proposals with this filter",
    )
    parser.add_argument(
        "--gt-dataset",
        action="extend",
        nargs="*",
        help="labelled dataset(s) for AR@100 against their ground truth, any class (AlignDet; "
        f"default: {DEFAULT_GT_DATASET}; the option without a name: none)",
    )
    parser.add_argument("--no-gt", action="store_true", help="no AR against a labelled dataset")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME=CACHE_DIR",
        help="another AR@100 reference of the --dataset images: a proposal cache keyed by image "
        "id; its boxes are read as continuous for a ground-truth cache (settings backend "
        "'ground_truth'), else as inclusive pixels (selective search); repeatable",
    )
    parser.add_argument(
        "--reference-continuous",
        action="append",
        default=[],
        metavar="NAME=CACHE_DIR",
        help="the same, read as continuous boxes (x2 = x1 + width) whatever the cache records",
    )
    parser.add_argument("--num-images", type=int, help="first N images of each set")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--norm-stats",
        choices=("batch", "running"),
        default="batch",
        help="retrieval: batch norms on the batch's statistics as in the loss (default), or "
        "on their running statistics (plain eval mode)",
    )
    parser.add_argument("--metrics", help="metrics.json (default: beside --checkpoint)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides path.key=value")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if not args.checkpoint and not args.random_control:
        raise SystemExit("give --checkpoint, --random-control or both")
    if args.make_proposals and not args.proposals:
        raise SystemExit("--make-proposals needs --proposals DIR")
    datasets = args.dataset or [DEFAULT_DATASET]
    gt_datasets = args.gt_dataset if args.gt_dataset is not None else [DEFAULT_GT_DATASET]
    gt_datasets = [] if args.no_gt else gt_datasets
    references = {}
    for items, inclusive in ((args.reference, None), (args.reference_continuous, False)):
        for item in items:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder or name in ("pseudo", "gt", *references):
                raise SystemExit(
                    f"a reference is NAME=CACHE_DIR with a new NAME (not pseudo / gt), got {item}"
                )
            references[name] = (folder, inclusive)

    from detectron2.config import LazyConfig

    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.projects.pretrain_diagnostics import (
        diagnostics_table,
        json_safe,
        pretrain_diagnostics,
    )
    from d2ext.utils.io import atomic_write_bytes

    if any(n.startswith("d2ext_demo") for n in datasets + gt_datasets):
        generate_demo_data()
    register_all_datasets()
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)
    if args.make_proposals:
        from d2ext.proposals import dataset_items, filter_from_name, generate_proposals

        items = [it for name in datasets for it in dataset_items(name)]
        filt = filter_from_name(args.make_proposals)
        print(generate_proposals(items, args.proposals, filt=filt, workers=1), flush=True)
    try:
        result = pretrain_diagnostics(
            cfg,
            args.checkpoint,
            datasets=datasets,
            proposals_dir=args.proposals,
            random_control=args.random_control,
            control_init=args.control_init,
            gt_datasets=gt_datasets,
            references=references,
            num_images=args.num_images,
            batch_size=args.batch_size,
            seed=args.seed,
            norm_stats=args.norm_stats,
            metrics=args.metrics,
            out_dir=args.out,
            device=args.device,
        )
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"pretrain_diagnostics: {e}") from e
    result["config"] = os.path.abspath(args.config)
    result["overrides"] = list(args.opts)
    path = os.path.join(args.out, "pretrain_diagnostics.json")
    atomic_write_bytes(path, json.dumps(json_safe(result), indent=2, allow_nan=False).encode())
    print(diagnostics_table(result))
    print(f"wrote {path}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
