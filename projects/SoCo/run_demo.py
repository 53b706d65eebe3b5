#!/usr/bin/env python
"""SoCo at demo scale, end to end, as a low-label protocol: proposals -> pretraining ->
conversion -> fine-tuning on 10 % and on 100 % of d2ext_demo_shapes_train at the same
iteration budget, per seed, from three initialisations:

- "SoCo": pretrained on the unlabeled pool's selective-search proposals (ratio3size0308);
- "random": the same detector randomly initialised;
- "oracle": the same pretraining on the pool's class-agnostic ground-truth boxes instead of
  proposals (a proposal cache written from the boxes; the same config reads it).

Prints AP / AP50 mean +- std over seeds per split and initialisation, runs the pretraining
diagnostics (tools/pretrain_diagnostics.py: cross-view retrieval against a random network) on
held-out pool images, and writes everything to <out>/summary.json.

    python projects/SoCo/run_demo.py [--seeds 0 1 2] [--arms soco random oracle]
        [--splits 10pct 100pct] [--pool large|small] [--quick] [--plan]
    (make demo MODE=soco)

Every step is resumable: rerunning skips finished steps (proposals in the cache, pretrainings
with model_final.pth, fine-tunings with eval_results.json) and resumes interrupted trainings
from their last checkpoint. Folders name what differs from the defaults (pool, filter,
iterations), so a run with other settings never reuses another's results; the earlier demo's
folders (pretrain/, finetune_soco_seedS/, finetune_scratch_seedS/: the small-object pool, 100 %,
300 iterations) are those of --pool small --splits 100pct --finetune-iters 300.
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
    Step,
    add_protocol_options,
    diagnostics_step,
    finetune_rows,
    low_label_finetunes,
    low_label_summary,
    read_diagnostics,
    resolve_protocol_args,
    run_diagnostics,
    run_plan,
    schedule_overrides,
)

CONFIGS = os.path.join(REPO, "projects", "SoCo", "configs")
PRETRAIN = os.path.join(CONFIGS, "soco_R18_FPN_4conv1fc_demo.py")
FINETUNE = os.path.join(CONFIGS, "faster_rcnn_R18_FPN_4conv1fc_demo.py")
SOCO_FILTER_NAME = "ratio3size0308"
# pool key -> the unlabeled split pretraining reads
POOLS = {"large": "d2ext_demo_unlabeled_large", "small": "d2ext_demo_unlabeled"}
HELDOUT = "d2ext_demo_unlabeled_large_heldout"
ARMS = {"soco": "SoCo", "random": "random", "oracle": "oracle"}  # flag -> table label
FINETUNE_ITERS = 100  # the protocol's budget (README: the 60-minute estimate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument(
        "--pool",
        choices=sorted(POOLS),
        default="large",
        help="unlabeled pool: large (d2ext_demo_unlabeled_large, objects SoCo's filter keeps) "
        "or small (d2ext_demo_unlabeled, the earlier demo's)",
    )
    parser.add_argument(
        "--filter",
        default=SOCO_FILTER_NAME,
        help="proposal filter (SoCo's ratio3size0308; ratio3size0008 keeps small boxes too)",
    )
    add_protocol_options(parser, "soco_demo", FINETUNE_ITERS)
    return parser


def resolve(args) -> argparse.Namespace:
    """Fills the defaults that depend on --quick."""
    return resolve_protocol_args(args, "soco_demo", FINETUNE_ITERS)


def build_plan(args, proposals_root: str) -> list[Step]:
    """The demo's steps in order (see :class:`demo_runs.Step`), from resolved arguments.

    Args:
        args: :func:`resolve`'s namespace.
        proposals_root: the folder of the proposal caches (``<demo data>/proposals``).
    """
    pool = POOLS[args.pool]
    pool_dir = pool.removeprefix("d2ext_demo_")
    legacy_pool = args.pool == "small" and args.filter == SOCO_FILTER_NAME
    it = "" if args.pretrain_iters is None else f"_it{args.pretrain_iters}"
    ft_iters = args.finetune_iters
    own_iters, schedule = schedule_overrides(FINETUNE, ft_iters)
    legacy_ft = ft_iters == own_iters

    steps: list[Step] = []
    arms: dict[str, str] = {}
    tags: dict[str, str] = {}
    if "soco" in args.arms:
        prefix = "soco" if args.filter == SOCO_FILTER_NAME else args.filter
        cache = os.path.join(proposals_root, f"{prefix}_{pool_dir}")
        if legacy_pool and not it:
            name, converted = "pretrain", "soco_detectron2.pth"
        else:
            filt = "" if args.filter == SOCO_FILTER_NAME else f"_{args.filter}"
            name = f"pretrain_{args.pool}{filt}{it}"
            converted = f"{name}_detectron2.pth"
        steps.append(Step("proposals", cache, dataset=pool, arm=args.filter))
        steps += _pretrain_and_convert("SoCo", name, converted, cache, pool, args)
        arms[ARMS["soco"]] = os.path.join(args.out, converted)
        tags[ARMS["soco"]] = name
    if "random" in args.arms:
        arms[ARMS["random"]] = ""
        tags[ARMS["random"]] = "random"
    if "oracle" in args.arms:
        cache = os.path.join(proposals_root, f"gt_{pool_dir}")
        name = f"pretrain_oracle_{args.pool}{it}"
        steps.append(Step("box_cache", cache, dataset=pool, arm="ground truth"))
        steps += _pretrain_and_convert("oracle", name, f"{name}_detectron2.pth", cache, pool, args)
        arms[ARMS["oracle"]] = os.path.join(args.out, f"{name}_detectron2.pth")
        tags[ARMS["oracle"]] = name

    def folder(label: str, split: str, seed: int) -> str:
        if split == "100pct" and legacy_ft:
            if label == ARMS["random"]:
                return os.path.join(args.out, f"finetune_scratch_seed{seed}")
            if label == ARMS["soco"] and tags[label] == "pretrain":
                return os.path.join(args.out, f"finetune_soco_seed{seed}")
        return os.path.join(args.out, "finetune", tags[label], f"{split}_it{ft_iters}_seed{seed}")

    steps += low_label_finetunes(
        FINETUNE, arms, args.splits, args.seeds, ft_iters, folder, schedule
    )
    if "soco" in args.arms and not args.no_diagnostics:
        name = tags[ARMS["soco"]]
        (pre,) = [s for s in steps if s.kind == "pretrain" and s.arm == "SoCo"]
        steps.append(
            diagnostics_step(
                PRETRAIN,
                os.path.join(args.out, name),
                os.path.join(args.out, "diagnostics", name),
                (
                    "--dataset",
                    HELDOUT,
                    "--proposals",
                    os.path.join(proposals_root, f"soco_{HELDOUT.removeprefix('d2ext_demo_')}"),
                    "--make-proposals",
                    SOCO_FILTER_NAME,
                    "--gt-dataset",
                ),
                pre.overrides,  # the pretraining's pool and proposal cache
            )
        )
    return steps


def _pretrain_and_convert(label, name, converted, cache, pool, args) -> list[Step]:
    overrides = [
        f"dataloader.train.mapper.proposals.cache_dir={cache}",
        f"dataloader.train.dataset.names={pool}",
    ]
    if args.pretrain_iters:
        overrides.append(f"train.max_iter={args.pretrain_iters}")
    pretrain_dir = os.path.join(args.out, name)
    return [
        Step("pretrain", pretrain_dir, PRETRAIN, tuple(overrides), arm=label, dataset=pool),
        Step("convert", os.path.join(args.out, converted), arm=label, init=pretrain_dir),
    ]


def make_proposals(step: Step) -> None:
    from d2ext.proposals import dataset_items, filter_from_name, generate_proposals

    filt = filter_from_name(step.arm)
    summary = generate_proposals(
        dataset_items(step.dataset), step.out, filt=filt, workers=os.cpu_count() or 1
    )
    print(summary, flush=True)


def make_box_cache(step: Step) -> None:
    from d2ext.data.datasets.demo import write_ground_truth_proposals

    n = write_ground_truth_proposals(step.dataset, step.out)
    print(f"ground-truth proposal cache {step.out}: {n} images written", flush=True)


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


ACTIONS = {
    "proposals": make_proposals,
    "box_cache": make_box_cache,
    "convert": lambda step: convert(step.init, step.out),
    "diagnostics": run_diagnostics,
}


def main(argv=None):
    args = resolve(build_parser().parse_args(argv))
    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data
    from d2ext.data.datasets.demo import demo_root
    from d2ext.utils.io import atomic_write_bytes

    plan = build_plan(args, os.path.join(demo_root(), "proposals"))
    if args.plan:
        for step in plan:
            print(step)
        return plan
    generate_demo_data()  # writes only the splits missing
    register_all_datasets()
    run_plan(plan, ACTIONS)

    rows = finetune_rows(plan)
    labels = [ARMS[a] for a in args.arms]
    pretrained = [a for a in labels if a != ARMS["random"]]
    summary = {
        "settings": {
            k: getattr(args, k)
            for k in ("seeds", "arms", "splits", "pool", "filter", "pretrain_iters")
        }
        | {"finetune_iters": args.finetune_iters, "pool_dataset": POOLS[args.pool]},
        "runs": rows,
        **low_label_summary(rows, pretrained, ARMS["random"]),
        "diagnostics": {s.init: read_diagnostics(s) for s in plan if s.kind == "diagnostics"},
    }
    os.makedirs(args.out, exist_ok=True)
    atomic_write_bytes(
        os.path.join(args.out, "summary.json"), json.dumps(summary, indent=2).encode()
    )
    return summary


if __name__ == "__main__":
    main()
