"""Speed of d2ext's compiled CPU kernels against their pure-torch references and against
detectron2's ``assign_boxes_to_levels``, measured in one run and printed as ratios.

    python benchmarks/ops.py [--sizes 1000 100000 10000000] [--repeats 5] [--threads N]

A ratio > 1 means the compiled kernel is that many times faster than the baseline in the same
row (best-of-``repeats`` wall time of each, after one warm-up call).
"""

import argparse
import time

import torch
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes

from d2ext.layers import (
    SOCO_THRESHOLDS,
    assign_levels_detectron2_reference,
    assign_levels_soco_reference,
    box_jitter_reference,
)
from d2ext.layers._ops import C_IMPORT_ERROR


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make_boxes(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 600 + 1
    return torch.cat([xy, xy + wh], dim=1)


def _cases(boxes: torch.Tensor, rand: torch.Tensor):
    """(op name, compiled kernel call, [(baseline name, baseline call), ...]) per op."""
    ops = torch.ops.d2ext
    thr = list(SOCO_THRESHOLDS)
    return [
        (
            "box_jitter",
            lambda: ops.box_jitter(boxes, rand, 0.5, 0.1),
            [("torch reference", lambda: box_jitter_reference(boxes, rand, 0.5, 0.1))],
        ),
        (
            "assign_levels soco",
            lambda: ops.assign_fpn_levels_threshold(boxes, thr, True, False),
            [("torch reference", lambda: assign_levels_soco_reference(boxes, thr))],
        ),
        (
            "assign_levels detectron2",
            lambda: ops.assign_fpn_levels_log(boxes, 2, 5, 224.0, 4),
            [
                ("torch reference", lambda: assign_levels_detectron2_reference(boxes, 2, 5)),
                (
                    "detectron2 assign_boxes_to_levels",
                    lambda: assign_boxes_to_levels([Boxes(boxes)], 2, 5, 224, 4),
                ),
            ],
        ),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**5, 10**7])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if C_IMPORT_ERROR is not None:
        raise SystemExit(f"d2ext._C is not built ({C_IMPORT_ERROR}); run `make setup` first")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 boxes, CPU")
    header = (
        f"{'op':<28}{'boxes':>10}{'kernel ms':>12}{'baseline':>36}{'base ms':>12}{'speed-up':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        boxes = make_boxes(n)
        rand = torch.rand(n, 5, generator=torch.Generator().manual_seed(1))
        rows = _cases(boxes, rand)
        for name, kernel, baselines in rows:
            tk = best_time(kernel, args.repeats)
            for base_name, base in baselines:
                tb = best_time(base, args.repeats)
                print(
                    f"{name:<28}{n:>10}{tk * 1e3:>12.3f}{base_name:>36}{tb * 1e3:>12.3f}"
                    f"{tb / tk:>9.1f}x"
                )


if __name__ == "__main__":
    main()
