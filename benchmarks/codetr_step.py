"""Co-Deformable-DETR against its base detector (two-stage Deformable DETR), measured in the
same run: training step time (forward + backward) and inference time, as ratios (Co / base).

    python benchmarks/codetr_step.py [--scale full|demo|codino-full|codino-demo] [--size 512]
        [--batch 2] [--repeats 5] [--infer-only]

``full`` (default): the R-50 12-epoch COCO configs (6 + 6 layers, 300 queries, ATSS + Faster
R-CNN auxiliary heads, up to 300 positive queries per head and image); ``demo``: the R-18 demo
configs; ``codino-full`` / ``codino-demo``: Co-DINO against DINO (R-50 5-scale / R-18 demo), the
DINO model with Co-DINO's test-time selection. Random weights (timing does not depend on them),
random ``--size`` x ``--size`` images with 8 random boxes each; the base detector gets the
Co-DETR model's own weights minus the auxiliary modules. All inference rounds run first, then all
training rounds, after one warm-up round each. Each round times the base detector, the Co model
and a second, identical copy of the base detector (the A/A control), in an order that rotates
from round to round, so that a drift in machine load reaches each model alike. A ratio is the
median over ``--repeats`` rounds of the per-round ratio (Co / base, and copy / base for the
control); the A/A ratio's spread shows how far the timer's noise alone moves a ratio on this
machine. Inference: ``model.eval()``, ``torch.no_grad()``, one image at a time. Target (issue
#8): inference ratio <= 1.02.
"""

import argparse
import copy
import json
import os
import statistics
import time

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from d2ext.projects.codetr import strip_auxiliary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "full": ("deformable_detr_R50_12ep_coco.py", "co_deformable_detr_R50_12ep_coco.py"),
    "demo": ("deformable_detr_R18_demo.py", "co_deformable_detr_R18_demo.py"),
    # Co-DINO against DINO; the DINO model takes Co-DINO's test-time selection (soft-NMS)
    "codino-full": ("dino_R50_5scale_12ep_coco.py", "co_dino_R50_12ep_coco.py"),
    "codino-demo": ("dino_R18_demo.py", "co_dino_R18_demo.py"),
}


def _batch(n, size, num_classes, gen):
    out = []
    for _ in range(n):
        xy = torch.rand(8, 2, generator=gen) * size * 0.7
        wh = torch.rand(8, 2, generator=gen) * size * 0.3 + 16
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1).clamp(max=size))
        inst.gt_classes = torch.randint(num_classes, (8,), generator=gen)
        image = torch.rand(3, size, size, generator=gen) * 255
        out.append({"image": image, "instances": inst, "height": size, "width": size})
    return out


def _train_step(model, batch):
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    with EventStorage(0):
        sum(model(batch).values()).backward()
    return time.perf_counter() - t


@torch.no_grad()
def _infer(model, batch):
    t = time.perf_counter()
    for x in batch:
        model([x])
    return (time.perf_counter() - t) / len(batch)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(CONFIGS), default="full")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--infer-only", action="store_true", help="time inference only (no training rounds)"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    base_file, co_file = (
        os.path.join(REPO, "projects/CoDETR/configs", f) for f in CONFIGS[args.scale]
    )
    co = instantiate(LazyConfig.load(co_file).model)
    base = instantiate(LazyConfig.load(base_file).model)
    base.load_state_dict(strip_auxiliary(co.state_dict()), strict=True)
    for key in ("soft_nms_iou", "num_preselect", "num_detections"):  # DINO / Co-DINO
        if hasattr(co, key):
            setattr(base, key, getattr(co, key))
    twin = copy.deepcopy(base)  # the A/A control: the base detector again
    gen = torch.Generator().manual_seed(0)
    batch = _batch(args.batch, args.size, co.num_classes, gen)
    models = {"base": base, "co": co, "twin": twin}
    times = {w: {k: [] for k in models} for w in ("infer", "train")}
    # inference first, then training: a training step's freed graph would otherwise disturb the
    # allocator under the inference that follows it
    works = [("infer", _infer)] + ([] if args.infer_only else [("train", _train_step)])
    for work, run in works:
        for model in models.values():
            model.train(work == "train")
        names = list(models)
        for r in range(args.repeats + 1):
            k = r % len(names)
            for name in names[k:] + names[:k]:  # the order rotates per round
                t = run(models[name], batch)
                if r:  # round 0 warms up
                    times[work][name].append(t)

    def ratio(work, name):
        per_round = [a / b for a, b in zip(times[work][name], times[work]["base"], strict=True)]
        q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
        return {"median": statistics.median(per_round), "q1": q[0], "q3": q[-1]}

    med = {w: {k: statistics.median(v) for k, v in t.items() if v} for w, t in times.items()}
    infer = ratio("infer", "co")
    report = {
        "scale": args.scale,
        "size": args.size,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "inference_s_per_image": {"base": med["infer"]["base"], "co_detr": med["infer"]["co"]},
        "inference_ratio": infer["median"],
        "inference_ratio_quartiles": infer,
        # the same model timed twice: how far noise alone moves a ratio here
        "inference_ratio_aa_control": ratio("infer", "twin"),
    }
    if not args.infer_only:
        report["train_step_s"] = {"base": med["train"]["base"], "co_detr": med["train"]["co"]}
        report["train_step_ratio"] = ratio("train", "co")["median"]
        report["train_step_ratio_aa_control"] = ratio("train", "twin")
    report["params_M"] = {
        "base": sum(p.numel() for p in base.parameters()) / 1e6,
        "co_detr_training": sum(p.numel() for p in co.parameters()) / 1e6,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
