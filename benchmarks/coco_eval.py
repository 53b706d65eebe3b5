"""Time of COCO box evaluation with pycocotools against faster-coco-eval, measured in one run on
the same predictions and printed as ratios.

    python benchmarks/coco_eval.py [--images 80 4800] [--repeats 3]
    python benchmarks/coco_eval.py --results OUT/coco_instances_results.json \
        --dataset d2ext_demo_shapes_val

Each row runs detectron2's ``_evaluate_predictions_on_coco`` (``loadRes``, ``evaluate``,
``accumulate``, ``summarize``: what ``d2ext.evaluation.COCOEvaluator`` runs per task) once with
pycocotools' ``COCOeval`` and once with ``faster_coco_eval.COCOeval_faster``, best of
``repeats`` wall times after one warm-up. ratio = pycocotools time / faster-coco-eval time; the
last column is the largest difference of the 12 COCO stats between the two. Synthetic rows
use a seeded data set of 5 classes, 1-5 objects per image (some images empty, one crowd region
in ten images) and about 8 scored boxes per image (jittered objects and false positives).
"""

import argparse
import contextlib
import io
import json
import time

import numpy as np


def synthetic(num_images: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dict and box results over ``num_images`` images.

    Args:
        num_images (int): number of images.
        seed (int): seed of the generator.

    Returns:
        tuple[dict, list[dict]]: the ground truth in COCO json form and the results in COCO's
        results form (``image_id``, ``category_id``, ``bbox`` XYWH, ``score``).
    """
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        h, w = int(rng.integers(240, 481)), int(rng.integers(240, 641))
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.jpg"})
        num_gt = 0 if image_id % 8 == 0 else int(rng.integers(1, 6))
        for _ in range(num_gt):
            bw, bh = rng.uniform(8, w * 0.6), rng.uniform(8, h * 0.6)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            c = int(rng.integers(1, 6))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": c,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
            for _ in range(int(rng.integers(1, 3))):
                jitter = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": c if rng.random() < 0.85 else int(rng.integers(1, 6)),
                        "bbox": list(np.array([x, y, bw, bh]) + jitter),
                        "score": float(rng.random()),
                    }
                )
        if image_id % 10 == 0:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [0.0, 0.0, w / 3, h / 3],
                    "area": w * h / 9,
                    "iscrowd": 1,
                }
            )
        for _ in range(int(rng.integers(2, 6))):
            bw, bh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 6)),
                    "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh],
                    "score": float(rng.random()),
                }
            )
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, 6)]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results


def best_time(fn, repeats: int):
    """Best wall time of ``fn`` over ``repeats`` calls after one warm-up, and its last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def compare(coco_gt, results: list[dict], repeats: int) -> tuple[float, float, float]:
    """Returns (pycocotools seconds, faster-coco-eval seconds, largest stats difference)."""
    from faster_coco_eval import COCOeval_faster
    from pycocotools.cocoeval import COCOeval

    from d2ext.utils.d2_compat import evaluate_predictions_on_coco

    def run(cls):
        with contextlib.redirect_stdout(io.StringIO()):
            return evaluate_predictions_on_coco(coco_gt, results, "bbox", cocoeval_fn=cls)

    t_ref, ref = best_time(lambda: run(COCOeval), repeats)
    t_fast, fast = best_time(lambda: run(COCOeval_faster), repeats)
    diff = float(np.max(np.abs(np.asarray(ref.stats) - np.asarray(fast.stats))))
    return t_ref, t_fast, diff


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images",
        type=int,
        nargs="*",
        default=[80, 4800],
        help="synthetic data set sizes (default: 80 4800)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (default 3)")
    parser.add_argument("--results", help="a coco_instances_results.json to time as well")
    parser.add_argument("--dataset", help="registered data set of --results (json_file metadata)")
    args = parser.parse_args(argv)
    if bool(args.results) != bool(args.dataset):
        parser.error("--results and --dataset go together")

    from pycocotools.coco import COCO

    cases = []
    if args.results:
        from detectron2.data import MetadataCatalog

        from d2ext.data import register_all_datasets

        register_all_datasets()
        json_file = MetadataCatalog.get(args.dataset).get("json_file")
        if json_file is None:
            raise SystemExit(f"data set {args.dataset!r} has no json_file in its metadata")
        with open(args.results) as f:
            results = json.load(f)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(json_file)
        cases.append((args.dataset, coco_gt, results))
    for n in args.images:
        gt, results = synthetic(n)
        coco_gt = COCO()
        coco_gt.dataset = gt
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt.createIndex()
        cases.append((f"synthetic {n} images", coco_gt, results))

    rows = []
    print(
        f"{'predictions':<32} {'images':>6} {'boxes':>7} {'pycocotools':>12} "
        f"{'faster-coco-eval':>17} {'ratio':>6} {'max |d stats|':>14}"
    )
    for name, coco_gt, results in cases:
        t_ref, t_fast, diff = compare(coco_gt, results, args.repeats)
        row = {
            "name": name,
            "images": len(coco_gt.getImgIds()),
            "boxes": len(results),
            "pycocotools_s": t_ref,
            "faster_s": t_fast,
            "ratio": t_ref / t_fast,
            "max_stats_diff": diff,
        }
        rows.append(row)
        print(
            f"{name:<32} {row['images']:>6} {row['boxes']:>7} {t_ref * 1e3:>9.1f} ms "
            f"{t_fast * 1e3:>14.1f} ms {row['ratio']:>5.1f}x {diff:>14.1e}"
        )
    return rows


if __name__ == "__main__":
    main()
