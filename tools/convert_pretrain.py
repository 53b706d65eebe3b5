#!/usr/bin/env python
"""Converts a pretraining checkpoint (SoCo, AlignDet, any self-supervised run) into a Detectron2
checkpoint of a detector.

    python tools/convert_pretrain.py SRC.pth DST.pth --map online_net.= [--map SRC=DST ...] \\
        [--keep-predictors] [--drop-source SUBSTRING] [--config-file DETECTOR_CONFIG.py] \\
        [--report REPORT.json] [--unsafe-load] [--no-progress]

``--map`` pairs rename key prefixes (first match wins; keys matching none are left out as
unused). The detector's final classification / regression layers are dropped unless
``--keep-predictors``. With ``--config-file`` the result is compared with that detector: keys it
lacks or of another shape are left out, and every key loaded, missing, unexpected or of another
shape is listed (in ``--report``, and counted on stdout). SRC is read without running code from
it (d2ext.checkpoint.load_checkpoint: tensors, numpy arrays, plain data); ``--unsafe-load``
unpickles a trusted file that holds other objects. Reading and writing show progress bars with
rate and ETA on stderr. The conversion is d2ext.checkpoint.convert_checkpoint.
"""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="the pretraining checkpoint")
    parser.add_argument("dst", help="the Detectron2 checkpoint to write")
    parser.add_argument(
        "--map",
        action="append",
        required=True,
        metavar="SRC_PREFIX=DST_PREFIX",
        help="rename keys starting with SRC_PREFIX (repeatable; first match wins)",
    )
    parser.add_argument(
        "--keep-predictors",
        action="store_true",
        help="keep the detector's final classification / regression layers",
    )
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    prefix_map = []
    for item in args.map:
        if "=" not in item:
            raise SystemExit(f"--map takes SRC_PREFIX=DST_PREFIX, got {item!r}")
        prefix_map.append(tuple(item.split("=", 1)))

    import json

    from d2ext.checkpoint.convert import convert_checkpoint, exit_on_conversion_error
    from d2ext.utils.io import atomic_write_bytes

    model = None
    if args.config_file:
        from detectron2.config import LazyConfig, instantiate

        model = instantiate(LazyConfig.load(args.config_file).model)
    with exit_on_conversion_error(args.src):
        _, report = convert_checkpoint(
            args.src,
            prefix_map,
            model=model,
            dst=args.dst,
            keep_predictors=args.keep_predictors,
            drop_source=args.drop_source,
            meta={"__author__": f"d2ext convert_pretrain from {args.src}"},
            unsafe=args.unsafe_load,
            progress=not args.no_progress,
        )
    print(report.summary())
    out = report.to_dict()
    if args.report:
        atomic_write_bytes(args.report, json.dumps(out, indent=1).encode())
    print(f"wrote {args.dst}")
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
