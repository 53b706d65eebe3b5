#!/usr/bin/env python
"""AlignDet at demo scale, end to end, for one detector, as a low-label protocol: backbone ->
proposals -> box-domain pretraining -> extraction -> fine-tuning on 10 % and on 100 % of
d2ext_demo_shapes_train at the same iteration budget, per seed, from three initialisations:

- "AlignDet": the detector pretrained on the unlabeled pool's selective-search proposals
  (ratio3size0008, AlignDet's filter);
- "backbone only": the same backbone with random neck and heads (AlignDet's control);
- "oracle": the same pretraining on the pool's class-agnostic ground-truth boxes instead of
  proposals (a proposal cache written from the boxes; the same config reads it).

Prints AP / AP50 mean +- std over seeds per split and initialisation, runs the pretraining
diagnostics (tools/pretrain_diagnostics.py: cross-view retrieval and AR@100 against the
backbone-only start) on held-out pool images, and writes <out>/<detector>/summary.json.

    python projects/AlignDet/run_demo.py [--detector faster_rcnn|retinanet|fcos|detr]
        [--seeds 0 1 2] [--arms aligndet baseline oracle] [--splits 10pct 100pct]
        [--pool small|large] [--quick] [--plan]
    (make demo MODE=aligndet)

The backbone (frozen in pretraining, the same in every fine-tuning) is a ResNet-18 trained by
the demo Faster R-CNN on the *signs* split (other classes than the fine-tuning's shapes): the
stand-in for the ImageNet backbone AlignDet starts from. Every step is resumable; folders name
what differs from the defaults (pool, iterations), so a run with other settings never reuses
another's results. The earlier demo's folders (<detector>/pretrain, finetune_aligndet_seedS,
finetune_baseline_seedS: 100 %, the config's iterations) are those of --splits 100pct
--finetune-iters 300 (500 for detr).
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
    signs_backbone,
)

CONFIGS = os.path.join(REPO, "projects", "AlignDet", "configs")
DETECTORS = {
    "faster_rcnn": ("aligndet_faster_rcnn_R18_FPN_demo.py", "faster_rcnn_R18_FPN_demo_finetune.py"),
    "retinanet": ("aligndet_retinanet_R18_FPN_demo.py", "retinanet_R18_FPN_demo_finetune.py"),
    "fcos": ("aligndet_fcos_R18_FPN_demo.py", "fcos_R18_FPN_demo_finetune.py"),
    "detr": ("aligndet_deformable_detr_R18_demo.py", "deformable_detr_R18_demo_finetune.py"),
}
ALIGNDET_FILTER_NAME = "ratio3size0008"
# pool key -> the unlabeled split pretraining reads
POOLS = {"small": "d2ext_demo_unlabeled", "large": "d2ext_demo_unlabeled_large"}
HELDOUT = "d2ext_demo_unlabeled_large_heldout"
ARMS = {"aligndet": "AlignDet", "baseline": "backbone only", "oracle": "oracle"}
# the protocol's fine-tuning budget per detector (README: measured wall times and results).
# Faster R-CNN starts from its pretrained RPN and box head and separates the arms in 60
# iterations; the dense detectors' focal-loss classifiers start fresh in every arm and are
# still near 0 AP there, so their budget is 200. DETR's was not measured.
FINETUNE_ITERS = {"faster_rcnn": 60, "retinanet": 200, "fcos": 200, "detr": 60}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detector", choices=sorted(DETECTORS), default="faster_rcnn")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument(
        "--pool",
        choices=sorted(POOLS),
        default="small",
        help="unlabeled pool: small (d2ext_demo_unlabeled, objects of the fine-tuning's sizes, "
        "which AlignDet's filter keeps) or large (d2ext_demo_unlabeled_large)",
    )
    parser.add_argument("--backbone-iters", type=int, default=400)
    add_protocol_options(parser, "aligndet_demo", "the detector's: " + _budgets())
    return parser


def _budgets() -> str:
    return ", ".join(f"{k} {v}" for k, v in FINETUNE_ITERS.items())


def resolve(args) -> argparse.Namespace:
    """Fills the defaults that depend on --quick."""
    return resolve_protocol_args(args, "aligndet_demo", FINETUNE_ITERS[args.detector])


def build_plan(args, proposals_root: str) -> list[Step]:
    """The demo's steps in order (see :class:`demo_runs.Step`), from resolved arguments.

    Args:
        args: :func:`resolve`'s namespace.
        proposals_root: the folder of the proposal caches (``<demo data>/proposals``).
    """
    pretrain_cfg, finetune_cfg = (os.path.join(CONFIGS, c) for c in DETECTORS[args.detector])
    pool = POOLS[args.pool]
    pool_dir = pool.removeprefix("d2ext_demo_")
    it = "" if args.pretrain_iters is None else f"_it{args.pretrain_iters}"
    ft_iters = args.finetune_iters
    own_iters, schedule = schedule_overrides(finetune_cfg, ft_iters)
    tag = "_detr" if args.detector == "detr" else ""
    run = os.path.join(args.out, args.detector)
    backbone_only = os.path.join(args.out, f"backbone_only{tag}.pth")
    pretrain_init = os.path.join(args.out, f"aligndet_init{tag}.pth")

    # 1. the backbone: supervised on the signs split, shared by every detector and seed
    steps = [
        Step("backbone", os.path.join(args.out, "backbone_signs", "model_final.pth")),
        Step("backbone_files", backbone_only, arm=args.detector, init=pretrain_init),
        Step("backbone_files", pretrain_init, arm=args.detector, init=backbone_only),
    ]
    arms: dict[str, str] = {}
    tags: dict[str, str] = {}

    def pretrain(label: str, name: str, cache: str, converted: str) -> None:
        overrides = [
            f"train.init_checkpoint={pretrain_init}",
            f"dataloader.train.mapper.proposals.cache_dir={cache}",
            f"dataloader.train.dataset.names={pool}",
        ]
        if args.pretrain_iters:
            overrides.append(f"train.max_iter={args.pretrain_iters}")
        pretrain_dir = os.path.join(run, name)
        steps.append(
            Step("pretrain", pretrain_dir, pretrain_cfg, tuple(overrides), arm=label, dataset=pool)
        )
        converted = os.path.join(run, converted)
        steps.append(Step("extract", converted, finetune_cfg, arm=label, init=pretrain_dir))
        arms[label] = converted
        tags[label] = name

    # 2. proposals (AlignDet's ratio3size0008 filter) of the pool, 3. pretraining, 4. extraction
    if "aligndet" in args.arms:
        cache = os.path.join(proposals_root, f"aligndet_{pool_dir}")
        steps.append(Step("proposals", cache, dataset=pool, arm=ALIGNDET_FILTER_NAME))
        if args.pool == "small" and not it:
            pretrain(ARMS["aligndet"], "pretrain", cache, "aligndet_detectron2.pth")
        else:
            name = f"pretrain_{args.pool}{it}"
            pretrain(ARMS["aligndet"], name, cache, f"{name}_detectron2.pth")
    if "baseline" in args.arms:
        arms[ARMS["baseline"]] = backbone_only
        tags[ARMS["baseline"]] = "backbone_only"
    if "oracle" in args.arms:
        cache = os.path.join(proposals_root, f"gt_{pool_dir}")
        steps.append(Step("box_cache", cache, dataset=pool, arm="ground truth"))
        name = f"pretrain_oracle_{args.pool}{it}"
        pretrain(ARMS["oracle"], name, cache, f"{name}_detectron2.pth")

    # 5. fine-tuning
    def folder(label: str, split: str, seed: int) -> str:
        if split == "100pct" and ft_iters == own_iters:
            if label == ARMS["baseline"]:
                return os.path.join(run, f"finetune_baseline_seed{seed}")
            if label == ARMS["aligndet"] and tags[label] == "pretrain":
                return os.path.join(run, f"finetune_aligndet_seed{seed}")
        return os.path.join(run, "finetune", tags[label], f"{split}_it{ft_iters}_seed{seed}")

    steps += low_label_finetunes(
        finetune_cfg, arms, args.splits, args.seeds, ft_iters, folder, schedule
    )
    # 6. diagnostics of the pretraining against its backbone-only start
    if "aligndet" in args.arms and not args.no_diagnostics:
        name = tags[ARMS["aligndet"]]
        (pre,) = [s for s in steps if s.kind == "pretrain" and s.arm == ARMS["aligndet"]]
        held = HELDOUT.removeprefix("d2ext_demo_")
        held_gt = os.path.join(proposals_root, f"gt_{held}")
        steps.append(Step("box_cache", held_gt, dataset=HELDOUT, arm="ground truth"))
        steps.append(
            diagnostics_step(
                pretrain_cfg,
                os.path.join(run, name),
                os.path.join(run, "diagnostics", name),
                (
                    "--control-init",
                    pretrain_init,
                    "--dataset",
                    HELDOUT,
                    "--proposals",
                    os.path.join(proposals_root, f"aligndet_{held}"),
                    "--make-proposals",
                    ALIGNDET_FILTER_NAME,
                    "--reference",
                    f"heldout_gt={held_gt}",
                ),
                pre.overrides,  # the pretraining's pool, proposal cache and start
            )
        )
    return steps


def _save(path: str, state: dict, source: str) -> None:
    from d2ext.checkpoint.convert import save_detectron2_checkpoint

    save_detectron2_checkpoint(path, state, source=source)


def _backbone_state(args) -> tuple[dict, str]:
    """The signs backbone's tensors under the detector's names, and their prefix."""
    state = signs_backbone(args.out, args.backbone_iters)
    prefix = "backbone.bottom_up."
    if args.detector == "detr":  # the DETR's ResNet is its whole `backbone`
        state = {"backbone." + k[len(prefix) :]: v for k, v in state.items()}
        prefix = "backbone."
    return state, prefix


def actions(args) -> dict:
    """kind -> callable(step) for :func:`demo_runs.run_plan`."""
    backbone_dir = os.path.join(args.out, "backbone_signs")

    def backbone(step: Step) -> None:
        signs_backbone(args.out, args.backbone_iters)

    def backbone_files(step: Step) -> None:
        from d2ext.projects.aligndet import backbone_init_for_aligndet

        state, prefix = _backbone_state(args)
        if os.path.basename(step.out).startswith("backbone_only"):
            _save(step.out, state, backbone_dir)
        else:
            _save(step.out, backbone_init_for_aligndet(state, prefix), backbone_dir)

    def proposals(step: Step) -> None:
        from d2ext.proposals import dataset_items, filter_from_name, generate_proposals

        filt = filter_from_name(step.arm)
        items = dataset_items(step.dataset)
        print(generate_proposals(items, step.out, filt=filt, workers=os.cpu_count() or 1))

    def box_cache(step: Step) -> None:
        from d2ext.data.datasets.demo import write_ground_truth_proposals

        n = write_ground_truth_proposals(step.dataset, step.out)
        print(f"ground-truth proposal cache {step.out}: {n} images written", flush=True)

    return {
        "backbone": backbone,
        "backbone_files": backbone_files,
        "proposals": proposals,
        "box_cache": box_cache,
        "extract": lambda step: extract(step.init, step.config, step.out),
        "diagnostics": run_diagnostics,
    }


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
    run_plan(plan, actions(args))

    rows = finetune_rows(plan)
    labels = [ARMS[a] for a in args.arms]
    pretrained = [a for a in labels if a != ARMS["baseline"]]
    summary = {
        "detector": args.detector,
        "settings": {
            k: getattr(args, k)
            for k in ("seeds", "arms", "splits", "pool", "pretrain_iters", "finetune_iters")
        }
        | {"pool_dataset": POOLS[args.pool], "backbone_iters": args.backbone_iters},
        "runs": rows,
        **low_label_summary(rows, pretrained, ARMS["baseline"]),
        "diagnostics": {s.init: read_diagnostics(s) for s in plan if s.kind == "diagnostics"},
    }
    run = os.path.join(args.out, args.detector)
    os.makedirs(run, exist_ok=True)
    atomic_write_bytes(os.path.join(run, "summary.json"), json.dumps(summary, indent=2).encode())
    return summary


if __name__ == "__main__":
    main()
