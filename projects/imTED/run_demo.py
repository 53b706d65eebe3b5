#!/usr/bin/env python
"""imTED at demo scale: a compact MAE pretrained on the embedded images, then the same Faster
R-CNN (imTED's architecture: MAE-decoder-shaped box head, multi-scale modulator) fine-tuned on
the shapes split from that one checkpoint, in three arms at equal iterations, over several
seeds:

  imTED         encoder and decoder migrated (the box head is the MAE decoder)
  encoder only  the encoder's blocks and embeddings migrated; the whole box head random (the
                baseline; the head's first LN, which is MAE's final encoder norm, random too)
  random head   everything imTED migrates except the decoder's learned weights
                (decoder_embed, decoder_blocks), which are randomly initialised: the
                diagnostic that separates the migrated decoder from the architecture

Prints AP / AP50 per arm and seed, each arm's mean +- std over seeds, the modulator's learned
per-channel weight of every run (read from its final checkpoint), and whether imTED's mean AP
reaches the encoder-only baseline's.

    python projects/imTED/run_demo.py [--seeds 0 1 2] [--mae-iters N] [--iters N] [--arms ...]
    (make demo MODE=imted)

Resumable: finished steps are kept, interrupted trainings continue from their last checkpoint.
Run folders: output/imted_demo/{mae, imted_seedS, encoder_only_seedS, random_head_seedS}.
Results: output/imted_demo/summary.json.
"""

import argparse
import json
import math
import os
import sys

# Checkout-only: the demo helpers sit beside the paper folders (projects/demo_runs.py) and
# exit with an explanation outside a d2ext source checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from demo_runs import REPO, finetune_arms, run_train_net  # noqa: E402

CONFIGS = os.path.join(REPO, "projects", "imTED", "configs")
MAE_CONFIG = os.path.join(CONFIGS, "mae_vit_tiny_demo.py")
DETECTOR = os.path.join(CONFIGS, "imted_faster_rcnn_vit_tiny_demo.py")
# label -> run-folder prefix (<out>/<prefix>_seed<S>) and init file (<out>/<prefix>_init.pth)
ARM_FOLDERS = {"imTED": "imted", "encoder only": "encoder_only", "random head": "random_head"}
# the decoder's learned weights, left to their random initialisation in the "random head" arm
DECODER_WEIGHTS = ("roi_heads.box_head.decoder_embed.", "roi_heads.box_head.decoder_blocks.")


def _convert(
    mae_ckpt: str,
    out: str,
    encoder_only: bool = False,
    unsafe: bool = False,
    *,
    random_head: bool = False,
    model=None,
) -> None:
    """The MAE pretraining checkpoint -> the detector's init checkpoint at ``out`` (kept if it
    exists); stops if a key does not fit the detector.

    Args:
        mae_ckpt: the MAE checkpoint (official key layout).
        out: the file to write.
        encoder_only: the baseline: the encoder only, the whole box head left random.
        unsafe: unpickle ``mae_ckpt`` without limits (a trusted file only).
        random_head: the diagnostic: imTED's mapping less :data:`DECODER_WEIGHTS`, so the
            decoder's learned weights keep the detector's random initialisation (drawn from
            ``train.seed`` when the run builds the model).
        model: the detector to check the keys against (default: built from :data:`DETECTOR`).
    """
    from detectron2.config import LazyConfig, instantiate

    from d2ext.checkpoint import save_detectron2_checkpoint
    from d2ext.projects.imted import mae_to_imted

    if os.path.exists(out):
        return
    if encoder_only and random_head:
        raise ValueError("encoder_only and random_head are two different arms")
    if model is None:
        model = instantiate(LazyConfig.load(DETECTOR).model)
    meta = {"__author__": f"run_demo from {mae_ckpt}"}
    try:
        state, report = mae_to_imted(
            mae_ckpt,
            model,
            load_decoder=not encoder_only,
            dst=None if random_head else out,
            fail_on=("missing", "unexpected", "shape_mismatch"),
            meta=meta,
            unsafe=unsafe,
        )
    except ValueError as e:
        raise SystemExit(f"the MAE checkpoint does not fit the detector: {e}") from e
    if not random_head:
        print(("encoder only: " if encoder_only else "imTED: ") + report.summary(), flush=True)
        return
    kept = {k: v for k, v in state.items() if not k.startswith(DECODER_WEIGHTS)}
    save_detectron2_checkpoint(out, kept, **meta)
    print(
        f"random head: {len(kept)} keys loaded; the decoder's {len(state) - len(kept)} learned "
        "tensors (decoder_embed, decoder_blocks) left random",
        flush=True,
    )


def random_head_init(mae_ckpt: str, out: str, model=None, unsafe: bool = False) -> None:
    """Writes the "random head" arm's init checkpoint (see :func:`_convert`)."""
    _convert(mae_ckpt, out, unsafe=unsafe, random_head=True, model=model)


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def modulator_stats(checkpoint: str) -> dict:
    """The modulator's learned per-channel weight in a run's final checkpoint: its values and
    their mean, mean |w|, max |w| and standard deviation over channels."""
    from d2ext.projects.imted.checkpoint import modulator_weight

    w = modulator_weight(checkpoint)
    return {
        "mean": w.mean().item(),
        "mean_abs": w.abs().mean().item(),
        "max_abs": w.abs().max().item(),
        "std": w.std().item() if w.numel() > 1 else 0.0,
        "values": [round(v, 6) for v in w.tolist()],
    }


def summarize(rows: list[dict], labels) -> dict:
    """Per-arm mean and std over seeds of AP, AP50 and the modulator's mean |w|, the gains
    between arms and the target (imTED's mean AP >= encoder only's).

    Args:
        rows: one per run: {"init", "seed", "AP", "AP50", "modulator": {"mean_abs", ...}}.
        labels: the arms, in order.
    """
    mean, std = {}, {}
    for label in labels:
        mine = [r for r in rows if r["init"] == label]
        if not mine:
            continue
        cols = {"AP": [r["AP"] for r in mine], "AP50": [r["AP50"] for r in mine]}
        cols["modulator mean |w|"] = [r["modulator"]["mean_abs"] for r in mine]
        stats = {k: _mean_std(v) for k, v in cols.items()}
        mean[label] = {k: s[0] for k, s in stats.items()}
        std[label] = {k: s[1] for k, s in stats.items()}
    gains = {}
    pairs = (("imTED", "encoder only"), ("imTED", "random head"), ("random head", "encoder only"))
    for a, b in pairs:
        if a in mean and b in mean:
            gains[f"{a} - {b}"] = mean[a]["AP"] - mean[b]["AP"]
    out = {"mean": mean, "std": std, "gains_AP": gains}
    if "imTED - encoder only" in gains:
        out["ap_gain"] = gains["imTED - encoder only"]
        out["target"] = {
            "imTED mean AP >= encoder only mean AP": "met"
            if gains["imTED - encoder only"] >= 0
            else "missed"  # fmt: skip
        }
    return out


def print_table(rows: list[dict], summary: dict) -> None:
    """The table of the runs, then each arm's mean +- std, the gains and the target."""
    w = max([len("init")] + [len(r["init"]) for r in rows])
    cols = f"{'AP':>14} {'AP50':>14} {'mod mean|w|':>14} {'mod max|w|':>11}"
    print(f"\n{'init':<{w}} {'seed':>4} {cols}")
    for r in rows:
        m = r["modulator"]
        print(
            f"{r['init']:<{w}} {r['seed']:>4} {r['AP']:14.2f} {r['AP50']:14.2f} "
            f"{m['mean_abs']:14.4f} {m['max_abs']:11.4f}"
        )
    for label, mean in summary["mean"].items():
        sd = summary["std"][label]
        cells = [f"{mean[k]:6.2f} +- {sd[k]:4.2f}" for k in ("AP", "AP50")]
        cells.append(f"{mean['modulator mean |w|']:.4f}+-{sd['modulator mean |w|']:.4f}")
        print(f"{label:<{w}} mean " + " ".join(f"{c:>14}" for c in cells))
    for name, gain in summary["gains_AP"].items():
        print(f"AP {name}: {gain:+.2f}")
    for name, verdict in summary.get("target", {}).items():
        print(f"target {name}: {verdict}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mae-iters", type=int, default=None, help="default: the config's")
    parser.add_argument("--iters", type=int, default=None, help="fine-tuning; default: config's")
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARM_FOLDERS.values()),
        default=list(ARM_FOLDERS.values()),
        help="the arms to run (default: all three)",
    )
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
    arms = {}
    for label, prefix in ARM_FOLDERS.items():
        if prefix not in args.arms:
            continue
        init = os.path.join(args.out, f"{prefix}_init.pth")
        _convert(
            mae_ckpt,
            init,
            encoder_only=prefix == "encoder_only",
            unsafe=args.unsafe_load,
            random_head=prefix == "random_head",
        )
        arms[label] = (prefix, init)

    rows = finetune_arms(DETECTOR, arms, args.out, args.seeds, args.iters)
    for r in rows:
        run_dir = os.path.join(args.out, f"{arms[r['init']][0]}_seed{r['seed']}")
        r["modulator"] = modulator_stats(os.path.join(run_dir, "model_final.pth"))
    summary = summarize(rows, list(arms))
    print_table(rows, summary)
    summary = {"runs": rows, **summary, "seeds": args.seeds}
    path = os.path.join(args.out, "summary.json")
    atomic_write_bytes(path, json.dumps(summary, indent=1).encode())
    return summary


if __name__ == "__main__":
    main()
