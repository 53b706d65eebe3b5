#!/usr/bin/env python
"""Converts an official MAE *full* checkpoint (encoder + decoder, e.g. mae_visualize_vit_base.pth,
or one written by projects/imTED/configs/mae_vit_tiny_demo.py) into an imTED detector checkpoint:
encoder -> backbone.net, encoder's final norm + decoder -> roi_heads.box_head.

    python tools/convert_mae.py MAE.pth OUT.pth --config-file IMTED_CONFIG.py [--encoder-only] \\
        [--report REPORT.json] [--allow-mismatch] [--unsafe-load] [--no-progress]

With the detector config, shapes are checked, the position embedding is interpolated to the
detector's grid and every key is reported: loaded, missing, unexpected, unused by design, of
another shape; keys of another shape stop the conversion, writing nothing, unless
``--allow-mismatch`` (they are then left out). ``--encoder-only`` leaves the box head out (the
paper's baseline). MAE.pth is read without running code from it (``args`` may be an
argparse.Namespace, as in MAE's releases); ``--unsafe-load`` unpickles a trusted file that
holds other objects. Reading and writing show progress bars with rate and ETA on stderr. The
conversion is d2ext.projects.imted.mae_to_imted, which runs d2ext.checkpoint.convert_checkpoint.
"""

import argparse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="the MAE checkpoint")
    parser.add_argument("dst", help="the Detectron2 checkpoint to write")
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)

    import json

    from d2ext.checkpoint.convert import exit_on_conversion_error
    from d2ext.projects.imted import mae_to_imted
    from d2ext.utils.io import atomic_write_bytes

    model = None
    if args.config_file:
        from detectron2.config import LazyConfig, instantiate

        model = instantiate(LazyConfig.load(args.config_file).model)
    with exit_on_conversion_error(args.src):
        _, report = mae_to_imted(
            args.src,
            model,
            load_decoder=not args.encoder_only,
            dst=args.dst,
            fail_on=() if args.allow_mismatch else ("shape_mismatch",),
            meta={"__author__": f"d2ext convert_mae from {args.src}"},
            unsafe=args.unsafe_load,
            progress=not args.no_progress,
        )
    print(report.summary())
    for field in ("missing", "unexpected", "shape_mismatch"):
        if getattr(report, field):
            print(f"{field}: {getattr(report, field)}")
    out = report.to_dict()
    if args.report:
        atomic_write_bytes(args.report, json.dumps(out, indent=1).encode())
    print(f"wrote {args.dst}")
    return out


if __name__ == "__main__":
    main()
