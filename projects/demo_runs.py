"""Helpers of the demo drivers (projects/*/run_demo.py): resumable `tools/train_net.py` runs in
subprocesses and their results.

Checkout-only: the demos drive this repository's ``tools/train_net.py`` and configs, which the
installed d2ext package does not carry (its configs are reached with
``d2ext.model_zoo.get_config``). Each ``run_demo.py`` imports this file from its parent folder.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass

__all__ = [
    "LOW_LABEL_SPLITS",
    "REPO",
    "Step",
    "diagnostics_step",
    "finetune_arms",
    "finetune_rows",
    "low_label_finetunes",
    "low_label_summary",
    "mean_std",
    "print_comparison",
    "read_diagnostics",
    "read_eval_results",
    "run_diagnostics",
    "run_plan",
    "run_train_net",
    "schedule_overrides",
    "signs_backbone",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


PROTOCOL_QUICK = {"seeds": [0], "pretrain_iters": 20, "finetune_iters": 20}
"""The low-label demos' --quick settings (SoCo and AlignDet)."""


def add_protocol_options(parser, name: str, finetune_iters: int | str) -> None:
    """The options every low-label demo (SoCo, AlignDet) shares: --seeds, --out, --splits,
    --pretrain-iters, --finetune-iters (its help names the default ``finetune_iters``, which
    :func:`resolve_protocol_args` fills in), --quick, --no-diagnostics and --plan, for a demo
    whose output folder is ``output/<name>``."""
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--out", default=None, help=f"default output/{name}[_quick]")
    parser.add_argument(
        "--splits", nargs="+", choices=list(LOW_LABEL_SPLITS), default=list(LOW_LABEL_SPLITS)
    )
    parser.add_argument("--pretrain-iters", type=int, default=None, help="default: config's")
    parser.add_argument(
        "--finetune-iters", type=int, default=None, help=f"default {finetune_iters}"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: seed 0, 20 pretraining steps, 20 fine-tuning iterations, into "
        f"output/{name}_quick (explicit --seeds / --*-iters / --out win)",
    )
    parser.add_argument("--no-diagnostics", action="store_true")
    parser.add_argument("--plan", action="store_true", help="print the plan and exit")


def resolve_protocol_args(args, name: str, finetune_iters: int):
    """A copy of a low-label demo's parsed ``args`` with the defaults that depend on --quick:
    seeds (0 1 2), fine-tuning iterations (``finetune_iters``), pretraining steps, and the
    output folder ``output/<name>[_quick]``."""
    args = argparse.Namespace(**vars(args))
    defaults = {"seeds": [0, 1, 2], "finetune_iters": finetune_iters}
    for key, value in (PROTOCOL_QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = os.path.join(REPO, "output", f"{name}_quick" if args.quick else name)
    return args


def require_checkout(root: str = REPO) -> None:
    """Exits with an explanation unless ``root`` is a d2ext source checkout (``tools/`` and
    ``configs/`` beside ``projects/``)."""
    missing = [
        p for p in ("tools/train_net.py", "configs") if not os.path.exists(os.path.join(root, p))
    ]
    if missing:
        raise SystemExit(
            f"The d2ext demos (projects/<Paper>/run_demo.py) run from a source checkout only: "
            f"{root} lacks {', '.join(missing)}. Run them in a clone of the d2ext repository "
            "(the installed package has no tools/ and no demo drivers; its configs are "
            "reached with d2ext.model_zoo.get_config)."
        )


require_checkout()


def run_train_net(config: str, output_dir: str, overrides=(), eval_only: bool = False) -> None:
    """Runs ``tools/train_net.py`` on ``config`` into ``output_dir`` (with ``--resume``, so an
    interrupted run continues from its last checkpoint); raises if it fails."""
    if not os.path.isfile(config):
        raise FileNotFoundError(f"demo config {config} not found (a checkout of d2ext has it)")
    cmd = [sys.executable, TRAIN_NET]
    cmd += ["--eval-only"] if eval_only else ["--resume"]
    cmd += ["--config-file", config, f"train.output_dir={output_dir}", *overrides]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def signs_backbone(out_dir: str, max_iter: int = 400) -> dict:
    """The demo stand-in for an ImageNet backbone: the ResNet-18 of the demo Faster R-CNN
    (configs/baselines/faster_rcnn_R18_FPN_demo.py) trained on the *signs* split, whose classes
    differ from the shapes every demo fine-tunes on. Trained into ``<out_dir>/backbone_signs``
    once (resumable); returns its ``backbone.bottom_up.*`` tensors."""
    from d2ext.checkpoint import load_checkpoint

    run_dir = os.path.join(out_dir, "backbone_signs")
    final = os.path.join(run_dir, "model_final.pth")
    if not os.path.exists(final):
        run_train_net(
            os.path.join(REPO, "configs", "baselines", "faster_rcnn_R18_FPN_demo.py"),
            run_dir,
            [
                "dataloader.train.dataset.names=d2ext_demo_signs_train",
                "dataloader.test.dataset.names=d2ext_demo_signs_val",
                f"train.max_iter={max_iter}",
            ],
        )
    state = load_checkpoint(final)["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.bottom_up.")}


def read_eval_results(output_dir: str) -> dict:
    """The ``eval_results.json`` a run wrote (raises FileNotFoundError if it has none)."""
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        return json.load(f)


def finetune_arms(config: str, arms: dict, out_dir: str, seeds, max_iter=None) -> list[dict]:
    """Fine-tunes ``config`` once per seed and arm (resumable: a run with eval results is kept).

    Args:
        arms: label -> (run-folder prefix, init checkpoint path or ""[, config]); each run
            goes to ``<out_dir>/<prefix>_seed<seed>``; an arm's own config replaces ``config``.
        max_iter: overrides the config's ``train.max_iter`` when given.

    Returns:
        One row per run: {"init": label, "seed", "AP", "AP50"}.
    """
    rows = []
    for seed in seeds:
        for label, (prefix, init, *own) in arms.items():
            run_dir = os.path.join(out_dir, f"{prefix}_seed{seed}")
            if not os.path.exists(os.path.join(run_dir, "eval_results.json")):
                extra = [f"train.seed={seed}", f"train.init_checkpoint={init}"]
                if max_iter:
                    extra.append(f"train.max_iter={max_iter}")
                run_train_net(own[0] if own else config, run_dir, extra)
            bbox = read_eval_results(run_dir)["bbox"]
            rows.append({"init": label, "seed": seed, "AP": bbox["AP"], "AP50": bbox["AP50"]})
    return rows


def print_comparison(rows: list[dict], labels, title: str = "") -> dict:
    """Prints the rows of :func:`finetune_arms` and each arm's mean; returns the means
    {label: {"AP", "AP50"}}."""
    w = max(len(label) for label in labels)
    print(f"\n{title}\n{'init':<{w}} {'seed':>4} {'AP':>6} {'AP50':>6}")
    for r in rows:
        print(f"{r['init']:<{w}} {r['seed']:>4} {r['AP']:6.2f} {r['AP50']:6.2f}")
    mean = {}
    for label in labels:
        mine = [r for r in rows if r["init"] == label]
        mean[label] = {k: sum(r[k] for r in mine) / len(mine) for k in ("AP", "AP50")}
        print(f"{label:<{w}} mean {mean[label]['AP']:6.2f} {mean[label]['AP50']:6.2f}")
    return mean


# The low-label protocol's fine-tuning splits: label -> registered dataset
LOW_LABEL_SPLITS = {"10pct": "d2ext_demo_shapes_train_10pct", "100pct": "d2ext_demo_shapes_train"}
DIAGNOSTICS_TOOL = os.path.join(REPO, "tools", "pretrain_diagnostics.py")


@dataclass(frozen=True)
class Step:
    """One step of a demo's plan.

    Args:
        kind: what runs it (a key of the actions given to :func:`run_plan`).
        out: the file or folder it writes; :meth:`done` reads it.
        config: the LazyConfig it trains (train steps).
        overrides: ``path.key=value`` overrides of ``config``.
        arm: fine-tuning: the initialisation's label; pretraining: its label.
        split: fine-tuning: a key of :data:`LOW_LABEL_SPLITS`.
        seed: fine-tuning: ``train.seed``.
        dataset: the dataset it reads (fine-tuning: the training split; pretraining, proposals
            and box caches: the unlabeled pool).
        init: fine-tuning: ``train.init_checkpoint`` ("": random initialisation); conversion:
            the pretraining folder it converts.
    """

    kind: str
    out: str
    config: str = ""
    overrides: tuple[str, ...] = ()
    arm: str = ""
    split: str = ""
    seed: int | None = None
    dataset: str = ""
    init: str = ""

    def done(self) -> bool:
        """Whether the step finished: a training with ``model_final.pth`` (pretraining) or
        ``eval_results.json`` (fine-tuning), a diagnostics json, or an existing file. Proposal
        and box-cache steps resume inside themselves and are always run."""
        if self.kind in ("proposals", "box_cache"):
            return False
        if self.kind == "pretrain":
            return os.path.exists(os.path.join(self.out, "model_final.pth"))
        if self.kind == "finetune":
            return os.path.exists(os.path.join(self.out, "eval_results.json"))
        if self.kind == "diagnostics":
            return os.path.exists(os.path.join(self.out, "pretrain_diagnostics.json"))
        return os.path.exists(self.out)


def run_plan(steps, actions: dict) -> None:
    """Runs the steps in order, skipping finished ones (:meth:`Step.done`).

    Args:
        steps: the plan.
        actions: kind -> callable(step); "finetune" and "pretrain" default to
            :func:`run_train_net` on the step's config, folder and overrides.
    """
    train = lambda step: run_train_net(step.config, step.out, step.overrides)  # noqa: E731
    actions = {"finetune": train, "pretrain": train, **actions}
    for n, step in enumerate(steps, 1):
        label = " ".join(x for x in (step.kind, step.arm, step.split) if x)
        seed = "" if step.seed is None else f" seed {step.seed}"
        if step.done():
            print(f"[{n}/{len(steps)}] {label}{seed}: done, kept ({step.out})", flush=True)
            continue
        print(f"[{n}/{len(steps)}] {label}{seed} -> {step.out}", flush=True)
        actions[step.kind](step)


def low_label_finetunes(
    config, arms: dict, splits, seeds, max_iter: int, folder, extra=()
) -> list[Step]:
    """The fine-tunings of the low-label protocol, seed by seed, then split, then arm.

    Args:
        config: the fine-tuning LazyConfig.
        arms: label -> init checkpoint ("" for random initialisation).
        splits: keys of :data:`LOW_LABEL_SPLITS`; every split trains ``max_iter`` iterations.
        seeds: the seeds.
        max_iter: the iteration budget of every run.
        folder: callable(label, split, seed) -> the run's folder.
        extra: further overrides of every run.

    Returns:
        list[Step]: one "finetune" step per (seed, split, arm).
    """
    steps = []
    for seed in seeds:
        for split in splits:
            for label, init in arms.items():
                steps.append(
                    Step(
                        "finetune",
                        folder(label, split, seed),
                        config,
                        (
                            f"dataloader.train.dataset.names={LOW_LABEL_SPLITS[split]}",
                            f"train.seed={seed}",
                            f"train.init_checkpoint={init}",
                            f"train.max_iter={max_iter}",
                            *extra,
                        ),
                        arm=label,
                        split=split,
                        seed=seed,
                        dataset=LOW_LABEL_SPLITS[split],
                        init=init,
                    )
                )
    return steps


def schedule_overrides(config: str, max_iter: int) -> tuple[int, tuple[str, ...]]:
    """The config's own ``train.max_iter``, and the override that scales its
    ``lr_multiplier.warmup_iter`` by ``max_iter / train.max_iter`` (none when equal), so a
    shorter budget keeps the schedule's shape (its decay steps follow ``train.max_iter``)."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(config)
    own = int(cfg.train.max_iter)
    if max_iter == own:
        return own, ()
    own_warmup = int(cfg.lr_multiplier.warmup_iter)
    warmup = max(1, round(own_warmup * max_iter / own)) if own_warmup else 0
    return own, (f"lr_multiplier.warmup_iter={warmup}",)


def finetune_rows(steps) -> list[dict]:
    """{"init", "split", "seed", "AP", "AP50", "dir", "no_predictions"} of every finished
    fine-tuning step.

    detectron2's COCOEvaluator reports NaN for every metric when the model made no detection
    above its test score threshold ("No predictions from the model!"). Such a run found no
    object, so it counts as 0 AP and 0 AP50 here, marked ``no_predictions``; leaving the NaN
    would make its arm's mean NaN."""
    rows = []
    for step in steps:
        if step.kind == "finetune" and step.done():
            bbox = read_eval_results(step.out)["bbox"]
            empty = math.isnan(bbox["AP"])
            rows.append(
                {
                    "init": step.arm,
                    "split": step.split,
                    "seed": step.seed,
                    "AP": 0.0 if empty else bbox["AP"],
                    "AP50": 0.0 if empty else bbox["AP50"],
                    "dir": step.out,
                    "no_predictions": empty,
                }
            )
    return rows


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    values = list(values)
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def low_label_summary(rows: list[dict], pretrained, control: str) -> dict:
    """Mean +- std over seeds per split and arm, and each pretrained arm's lead over the
    control; prints them.

    Args:
        rows: :func:`finetune_rows`.
        pretrained: the labels of the pretrained arms.
        control: the label of the control (random initialisation, or random neck and heads).

    Returns:
        dict: {"table": {split: {arm: {"AP": [mean, std], "AP50": [mean, std], "seeds"}}},
        "lead": {split: {arm: {"AP": lead, "AP50": lead, "beyond_1_std": bool,
        "behind_1_std": bool}}}}; ``beyond_1_std``: the AP lead exceeds the larger of the two
        arms' AP stds; ``behind_1_std``: the arm trails the control by more than that.
    """
    table: dict = {}
    for r in rows:
        table.setdefault(r["split"], {}).setdefault(r["init"], []).append(r)
        if r.get("no_predictions"):
            print(f"{r['split']} {r['init']} seed {r['seed']}: no detection, counted as 0 AP")
    out = {"table": {}, "lead": {}}
    w = max([len(a) for a in (*pretrained, control)] + [4])
    print(f"\n{'split':<7} {'init':<{w}} {'seeds':>5} {'AP (mean +- std)':>18} {'AP50':>16}")
    for split in [s for s in LOW_LABEL_SPLITS if s in table]:
        out["table"][split] = {}
        for arm, mine in table[split].items():
            ap, ap50 = mean_std(r["AP"] for r in mine), mean_std(r["AP50"] for r in mine)
            seeds = sorted(r["seed"] for r in mine)
            out["table"][split][arm] = {"AP": list(ap), "AP50": list(ap50), "seeds": seeds}
            print(
                f"{split:<7} {arm:<{w}} {len(mine):>5} {ap[0]:>9.2f} +- {ap[1]:<5.2f} "
                f"{ap50[0]:>8.2f} +- {ap50[1]:<5.2f}"
            )
        base = out["table"][split].get(control)
        out["lead"][split] = {}
        for arm in pretrained:
            mine = out["table"][split].get(arm)
            if base is None or mine is None:
                continue
            lead = {k: mine[k][0] - base[k][0] for k in ("AP", "AP50")}
            spread = max(mine["AP"][1], base["AP"][1])
            lead["beyond_1_std"] = lead["AP"] > spread
            lead["behind_1_std"] = lead["AP"] < -spread
            out["lead"][split][arm] = lead
            verdict = (
                "ahead by more than"
                if lead["beyond_1_std"]
                else "behind by more than"
                if lead["behind_1_std"]
                else "within"
            )
            print(
                f"{split:<7} {arm} - {control}: AP {lead['AP']:+.2f}, AP50 {lead['AP50']:+.2f} "
                f"({verdict} one seed std, {spread:.2f})"
            )
    return out


def diagnostics_step(
    config: str, pretrain_dir: str, out: str, args=(), config_overrides=()
) -> Step:
    """The step that runs ``tools/pretrain_diagnostics.py`` on a pretraining's
    ``model_final.pth`` with its random control into ``out``.

    Args:
        config: the pretraining LazyConfig.
        pretrain_dir: the pretraining's output folder.
        out: the diagnostics' folder.
        args: extra command-line options of the tool.
        config_overrides: the pretraining's ``path.key=value`` overrides of ``config`` (its
            pool, its proposal cache), given to the tool last, as its config overrides, so it
            measures the config as pretrained (e.g. which held-out images the pretraining saw).

    Returns:
        Step: ``overrides`` holds the tool's arguments after ``--config``.
    """
    return Step(
        "diagnostics",
        out,
        config,
        (
            "--checkpoint",
            os.path.join(pretrain_dir, "model_final.pth"),
            "--random-control",
            *args,
            "--out",
            out,
            *config_overrides,
        ),
        init=pretrain_dir,
    )


_DIAGNOSTICS_FAILED = "diagnostics_failed.txt"


def run_diagnostics(step: Step) -> None:
    """Runs a :func:`diagnostics_step` in a subprocess; when this checkout has no
    ``tools/pretrain_diagnostics.py``, prints that the step is skipped. A failure is printed
    and recorded in ``<out>/diagnostics_failed.txt`` (:func:`read_diagnostics` reports it; a
    rerun tries again) so that the demo still writes its tables."""
    if not os.path.isfile(DIAGNOSTICS_TOOL):
        print(
            f"pretraining diagnostics skipped: {os.path.relpath(DIAGNOSTICS_TOOL, REPO)} is not "
            "in this checkout",
            flush=True,
        )
        return
    cmd = [sys.executable, DIAGNOSTICS_TOOL, "--config", step.config, *step.overrides]
    print("+", " ".join(cmd), flush=True)
    failed = os.path.join(step.out, _DIAGNOSTICS_FAILED)
    result = subprocess.run(cmd, cwd=REPO)
    os.makedirs(step.out, exist_ok=True)
    if result.returncode != 0:
        why = f"{os.path.basename(DIAGNOSTICS_TOOL)} exited with status {result.returncode}"
        print(f"pretraining diagnostics FAILED: {why} (see its output above)", flush=True)
        with open(failed, "w") as f:
            f.write(why + "\n")
    elif os.path.exists(failed):
        os.remove(failed)


def read_diagnostics(step: Step) -> dict:
    """The json a diagnostics step wrote, or {"failed": reason} / {"skipped": reason}."""
    path = os.path.join(step.out, "pretrain_diagnostics.json")
    failed = os.path.join(step.out, _DIAGNOSTICS_FAILED)
    if os.path.exists(failed):
        with open(failed) as f:
            return {"failed": f.read().strip()}
    if not os.path.exists(path):
        why = "not run" if os.path.isfile(DIAGNOSTICS_TOOL) else "no tools/pretrain_diagnostics.py"
        return {"skipped": why}
    with open(path) as f:
        return json.load(f)
