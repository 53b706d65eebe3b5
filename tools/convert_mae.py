#!/usr/bin/env python
"""Converts an official MAE *full* checkpoint (encoder + decoder, e.g. mae_visualize_vit_base.pth,
or one written by projects/imTED/configs/mae_vit_tiny_demo.py) into an imTED detector checkpoint:
encoder -> backbone.net, encoder's final norm + decoder -> roi_heads.box_head.

    python tools/convert_mae.py MAE.pth OUT.pth --config-file IMTED_CONFIG.py [--encoder-only] \
        [--report REPORT.json] [--unsafe-load]

With the detector config, shapes are checked, the position embedding is interpolated to the
detector's grid and every key is reported: loaded, missing, unexpected, unused by design,
of another shape. ``--encoder-only`` leaves the box head out (the paper's baseline). MAE.pth is
read without running code from it (``args`` may be an argparse.Namespace, as in MAE's
releases); ``--unsafe-load`` unpickles a trusted file that holds other objects.
"""

import argparse
import dataclasses
import json
import pickle

from d2ext.checkpoint import UnsafeCheckpointError, load_checkpoint, save_detectron2_checkpoint
from d2ext.projects.imted import mae_to_imted
from d2ext.utils.io import atomic_write_bytes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--config-file", default=None, help="the imTED detector config")
    parser.add_argument("--encoder-only", action="store_true", help="leave the decoder out")
    parser.add_argument("--report", default=None, help="write the key report here (json)")
    parser.add_argument(
        "--allow-mismatch", action="store_true", help="write even if keys are of another shape"
    )
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="unpickle SRC without restrictions (runs any code in it: only for a trusted file)",
    )
    args = parser.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.src, unsafe=args.unsafe_load)
    except UnsafeCheckpointError as e:
        raise SystemExit(str(e)) from e
    except (OSError, RuntimeError, EOFError, ValueError, IndexError, pickle.UnpicklingError) as e:
        raise SystemExit(f"cannot read checkpoint {args.src!r}: {e}") from e
    model = None
    if args.config_file:
        from detectron2.config import LazyConfig, instantiate

        model = instantiate(LazyConfig.load(args.config_file).model)
    try:
        state, report = mae_to_imted(ckpt, model, load_decoder=not args.encoder_only)
    except ValueError as e:
        raise SystemExit(f"{args.src}: {e}") from e
    print(report.summary())
    for field in ("missing", "unexpected", "shape_mismatch"):
        if getattr(report, field):
            print(f"{field}: {getattr(report, field)}")
    if report.shape_mismatch and not args.allow_mismatch:
        raise SystemExit("keys of another shape: wrong config for this checkpoint?")
    save_detectron2_checkpoint(
        args.dst,
        state,
        __author__=f"d2ext convert_mae from {args.src}",
        mae_report=report.summary(),
    )
    out = dataclasses.asdict(report)
    if args.report:
        atomic_write_bytes(args.report, json.dumps(out, indent=1).encode())
    print(f"wrote {args.dst}")
    return out


if __name__ == "__main__":
    main()
