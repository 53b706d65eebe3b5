"""Proposal backends on real offline photos at 500-px short side, in one run.

    python benchmarks/proposals.py [--backends selectivesearch ...] [--short-side 500]

Prints, per backend: seconds per image (one process), its speed-up over the reference
`selectivesearch` measured in the same run, raw and SoCo-filtered boxes per image, recall of
the reference's filtered boxes (the fraction with a box of this backend, filtered the same way,
at IoU >= 0.7) and how many images give exactly the reference's boxes; then the speed-up from 1
to 2 worker processes with the first backend (the photos repeated to --scaling-images
images), once the workers are started and counting their start-up.
"""

import argparse
import os
import tempfile
import time
from multiprocessing import get_context

import numpy as np
from PIL import Image

from d2ext.data.datasets.demo import _photos
from d2ext.proposals import BACKENDS, SOCO_FILTER, load_image_rgb
from d2ext.proposals.generate import _work
from d2ext.proposals.metrics import recall_hits


def write_photos(folder: str, short_side: int) -> list[tuple[str, str]]:
    items = []
    for i, photo in enumerate(_photos()):
        im = Image.fromarray(photo)
        scale = short_side / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
        path = os.path.join(folder, f"photo{i}.png")
        im.save(path)
        items.append((f"photo{i}", path))
    return items


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=sorted(BACKENDS))
    parser.add_argument("--short-side", type=int, default=500)
    parser.add_argument("--scaling-images", type=int, default=60)
    args = parser.parse_args()
    reference = "selectivesearch"
    with tempfile.TemporaryDirectory() as folder:
        items = write_photos(folder, args.short_side)
        images = [load_image_rgb(p) for _, p in items]
        print(f"{len(images)} photos at {args.short_side}-px short side")
        filtered, raw_boxes, seconds = {}, {}, {}
        for name in [reference] + [b for b in args.backends if b != reference]:
            start = time.perf_counter()
            raw = [BACKENDS[name](im) for im in images]
            per_image = (time.perf_counter() - start) / len(images)
            raw_boxes[name], seconds[name] = raw, per_image
            filtered[name] = [SOCO_FILTER(r, im.shape[:2])[0] for r, im in zip(raw, images)]
            line = (
                f"{name:<18} {per_image:6.2f} s/image  {np.mean([len(r) for r in raw]):7.1f} "
                f"boxes  {np.mean([len(f) for f in filtered[name]]):6.1f} after ratio3size0308"
            )
            if name != reference:
                hits = sum(map(recall_hits, filtered[reference], filtered[name]))
                total = sum(len(ref) for ref in filtered[reference])
                same = sum(
                    np.array_equal(a, b) for a, b in zip(raw_boxes[reference], raw_boxes[name])
                )
                line += (
                    f"  {seconds[reference] / per_image:5.1f}x faster"
                    f"  recall@0.7 of the reference {hits / max(total, 1):.3f}"
                    f"  identical boxes on {same}/{len(images)} images"
                )
            print(line)
        backend = args.backends[0]
        jobs = [(k, p, backend, SOCO_FILTER, {}) for k, p in items]
        jobs = (jobs * (args.scaling_images // len(jobs) + 1))[: args.scaling_images]
        steady, end_to_end = {}, {}
        for workers in (1, 2):
            pool = get_context("spawn").Pool(workers)
            start = time.perf_counter()
            pool.map(_work, jobs[:workers])  # start-up: interpreter, imports, first image
            t = time.perf_counter()
            list(pool.imap_unordered(_work, jobs))
            steady[workers] = time.perf_counter() - t
            end_to_end[workers] = time.perf_counter() - start
            pool.terminate()
        print(
            f"{backend} over {len(jobs)} images: 1 process {steady[1]:.1f} s, 2 processes "
            f"{steady[2]:.1f} s: speed-up {steady[1] / steady[2]:.2f}x once the workers are up "
            f"({end_to_end[1] / end_to_end[2]:.2f}x counting their start-up)"
        )


if __name__ == "__main__":
    main()
