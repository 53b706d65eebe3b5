#!/usr/bin/env python
"""Draws selective-search proposals over images, before and after filtering, as PNGs.

    python tools/visualize_proposals.py IMAGE [IMAGE ...] --out DIR [--filter ratio3size0308] \\
        [--backend d2ext | selectivesearch] [--no-progress]

Each image gives DIR/<name>_proposals.png: the raw proposals (left) and the ones the filter
keeps (right), drawn with detectron2's Visualizer. A progress bar (images done, rate, ETA) goes
to stderr unless --no-progress.
"""

import argparse
import os

import numpy as np

from d2ext.proposals import BACKENDS, DEFAULT_BACKEND, filter_from_name, load_image_rgb


def draw(image: np.ndarray, boxes_xywh: np.ndarray, title: str) -> np.ndarray:
    from detectron2.utils.visualizer import Visualizer

    vis = Visualizer(image)
    xyxy = np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]], axis=1)
    rng = np.random.default_rng(0)
    for box in xyxy:
        vis.draw_box(box, edge_color=tuple(rng.uniform(0.2, 1.0, 3)), line_style="-")
    vis.draw_text(title, (6, 6), horizontal_alignment="left", font_size=12, color="w")
    return vis.get_output().get_image()


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="folder of the PNGs")
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=sorted(BACKENDS),
        help="selective-search implementation (default: %(default)s)",
    )
    parser.add_argument(
        "--filter", default="ratio3size0308", help="proposal filter (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    filt = filter_from_name(args.filter)
    os.makedirs(args.out, exist_ok=True)
    written = []
    bar = tqdm(args.images, desc="proposals", unit="img", disable=args.no_progress)
    for path in bar:
        image = load_image_rgb(path)
        raw = BACKENDS[args.backend](image)
        kept, stage = filt(raw, image.shape[:2])
        left = draw(image, raw, f"{args.backend}: {len(raw)} boxes")
        right = draw(image, kept, f"{args.filter}: {len(kept)} kept ({stage})")
        out = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + "_proposals.png")
        from PIL import Image

        Image.fromarray(np.concatenate([left, right], axis=1)).save(out)
        written.append(out)
        bar.write(out)
    return written


if __name__ == "__main__":
    main()
