"""imTED inference against the same detector with detectron2's standard box head, measured in
the same run: time per image and peak memory, reported as ratios (imTED / standard).

    python benchmarks/imted_inference.py [--config CONFIG] [--size 512] [--images 5] [--repeats 3]

(default config: projects/imTED/configs/imted_faster_rcnn_vit_b_3x_coco.py, ViT-B)

Both detectors share the encoder, pyramid, RPN and proposal count; they differ in the ROI box
branch only. imTED: RoIAlign on the token map + the modulator on P2-P5 -> the MAE decoder
(8 x 512 for ViT-B) -> mean pool. Standard: RoIAlign on P2-P5 -> detectron2's
FastRCNNConvFCHead (4 conv + 1 fc with LN, ViTDet's box head). Random weights, random images
of ``--size`` x ``--size`` (timing does not depend on the weights); ``model.eval()``,
``torch.no_grad()``. Time: median over the images of the best of ``--repeats`` interleaved
rounds. Peak memory: CUDA max_memory_allocated on a GPU; on the CPU the rise of the process's
peak RSS during the first inference, each detector in its own subprocess.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, StandardROIHeads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, "projects/imTED/configs/imted_faster_rcnn_vit_b_3x_coco.py")


def build(config: str, which: str):
    cfg = LazyConfig.load(config)
    if which == "standard":
        heads = cfg.model.roi_heads
        heads._target_ = StandardROIHeads
        for key in ("single_scale_feature", "single_scale_stride", "modulator"):
            heads.pop(key)
        channels = cfg.model.backbone.out_channels
        heads.update(
            box_in_features=["p2", "p3", "p4", "p5"],
            box_pooler=L(ROIPooler)(
                output_size=7,
                scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32),
                sampling_ratio=0,
                pooler_type="ROIAlignV2",
            ),
            box_head=L(FastRCNNConvFCHead)(
                input_shape=L(ShapeSpec)(channels=channels, height=7, width=7),
                conv_dims=[256, 256, 256, 256],
                fc_dims=[1024],
                conv_norm="LN",
            ),
        )
        heads.box_predictor.input_shape = ShapeSpec(channels=1024)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0  # same number of boxes out
    return model


def _inputs(size: int, n: int, device):
    g = torch.Generator().manual_seed(0)
    return [
        [
            {
                "image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8).to(
                    device
                )
            }
        ]
        for _ in range(n)
    ]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_child(config, which, size, device) -> int:
    """Bytes: CUDA peak allocated, or the rise of peak RSS over the model's resident size."""
    device = torch.device(device)
    model = build(config, which).to(device)
    inputs = _inputs(size, 2, device)
    with torch.no_grad():
        if device.type == "cuda":
            model(inputs[0])  # warm-up (allocator, lazy inits)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            model(inputs[1])
            return torch.cuda.max_memory_allocated() - base
        # CPU: the first forward's rise of peak RSS over the built model (large blocks are
        # mmap'ed and returned, so the peak follows the live activations)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model(inputs[1])
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(peak_memory_child(args.config, args.child, args.size, args.device)))
        return None

    device = torch.device(args.device)
    models = {w: build(args.config, w).to(device) for w in ("imted", "standard")}
    inputs = _inputs(args.size, args.images, device)
    times = {w: [float("inf")] * len(inputs) for w in models}
    with torch.no_grad():
        for m in models.values():
            m(inputs[0])
        for _ in range(args.repeats):
            for i, x in enumerate(inputs):
                for w, m in models.items():  # interleaved: noise hits both alike
                    _sync(device)
                    t = time.perf_counter()
                    m(x)
                    _sync(device)
                    times[w][i] = min(times[w][i], time.perf_counter() - t)
    median = {w: statistics.median(t) for w, t in times.items()}
    mem = {}
    for w in models:
        cmd = [sys.executable, __file__, "--config", args.config, "--size", str(args.size)]
        cmd += ["--device", args.device, "--child", w]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        mem[w] = int(out.strip().splitlines()[-1])
    params = {w: sum(p.numel() for p in m.parameters()) for w, m in models.items()}
    print(f"config {os.path.relpath(args.config, REPO)}, {args.size}x{args.size}, {device}")
    for w in models:
        print(
            f"{w:<9} {median[w] * 1000:8.1f} ms/image  peak +{mem[w] / 2**20:8.1f} MiB  "
            f"{params[w] / 1e6:6.1f} M params"
        )
    ratio_t = median["imted"] / median["standard"]
    if mem["standard"] > 0:
        ratio_m = mem["imted"] / mem["standard"]
        print(f"imTED / standard: time {ratio_t:.2f}x, peak memory {ratio_m:.2f}x")
    else:  # the process peak (model build) was not exceeded: no usable CPU reading
        ratio_m = None
        print(f"imTED / standard: time {ratio_t:.2f}x, peak memory n/a on this device")
    return {"time_ms": median, "peak_bytes": mem, "time_ratio": ratio_t, "memory_ratio": ratio_m}


if __name__ == "__main__":
    main()
