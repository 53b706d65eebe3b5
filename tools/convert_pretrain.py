#!/usr/bin/env python
"""Converts a pretraining checkpoint into a Detectron2 checkpoint of a detector.

    python tools/convert_pretrain.py SRC.pth DST.pth --map online_net.= [--map SRC=DST ...] \
        [--keep-predictors] [--drop-source SUBSTRING] [--config-file DETECTOR_CONFIG.py] \
        [--report REPORT.json] [--unsafe-load]

``--map`` pairs rename key prefixes (first match wins; keys matching none are left out). With
``--config-file`` the result is compared with that detector: every key loaded, missing,
unexpected or of another shape is listed (in ``--report``, and counted on stdout). SRC is read
without running code from it (d2ext.checkpoint.load_checkpoint: tensors, numpy arrays, plain
data); ``--unsafe-load`` unpickles a trusted file that holds other objects.
"""

import argparse
import json
import pickle
import sys

from d2ext.checkpoint import (
    UnsafeCheckpointError,
    compare_with_model,
    convert_state_dict,
    load_checkpoint,
    save_detectron2_checkpoint,
)
from d2ext.utils.io import atomic_write_bytes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--map", action="append", required=True, metavar="SRC_PREFIX=DST_PREFIX")
    parser.add_argument("--keep-predictors", action="store_true")
    parser.add_argument(
        "--drop-source",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="leave out source keys containing it (AlignDet: projector)",
    )
    parser.add_argument("--config-file", default=None, help="detector LazyConfig to compare with")
    parser.add_argument("--report", default=None, help="write the full key report here (json)")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="unpickle SRC without restrictions (runs any code in it: only for a trusted file)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    prefix_map = []
    for item in args.map:
        if "=" not in item:
            raise SystemExit(f"--map takes SRC_PREFIX=DST_PREFIX, got {item!r}")
        prefix_map.append(tuple(item.split("=", 1)))
    try:
        ckpt = load_checkpoint(args.src, unsafe=args.unsafe_load)
    except UnsafeCheckpointError as e:
        raise SystemExit(str(e)) from e
    except (OSError, RuntimeError, EOFError, ValueError, IndexError, pickle.UnpicklingError) as e:
        raise SystemExit(f"cannot read checkpoint {args.src!r}: {e}") from e
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise SystemExit(
            f"{args.src!r} holds no state dict (a dict of tensors, or one under 'model')"
        )
    new, report = convert_state_dict(
        state, prefix_map, keep_predictors=args.keep_predictors, drop_source=args.drop_source
    )
    out = {
        "converted": report.converted,
        "dropped_predictors": report.dropped_predictors,
        "unused": report.unused,
    }
    print(report.summary())
    if args.config_file:
        from detectron2.config import LazyConfig, instantiate

        model = instantiate(LazyConfig.load(args.config_file).model)
        cmp = compare_with_model(model, new)
        out.update(cmp)
        print(
            f"against {args.config_file}: {len(cmp['loaded'])} loaded, {len(cmp['missing'])} "
            f"missing, {len(cmp['unexpected'])} unexpected, {len(cmp['shape_mismatch'])} "
            "of another shape"
        )
    save_detectron2_checkpoint(args.dst, new, __author__=f"d2ext convert_pretrain from {args.src}")
    if args.report:
        atomic_write_bytes(args.report, json.dumps(out, indent=1).encode())
    print(f"wrote {args.dst}")
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
