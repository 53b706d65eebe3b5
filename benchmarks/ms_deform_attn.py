"""Multi-scale deformable attention: the compiled ``d2ext::ms_deform_attn`` kernel against the
pure-torch ``F.grid_sample`` reference, measured in one run and printed as ratios.

    python benchmarks/ms_deform_attn.py [--shapes demo 4scale 5scale] [--repeats 2]
        [--codetr-size 512] [--codetr-repeats 3] [--skip-codetr] [--skip-op]
        [--codetr-infer-only] [--threads N]

1. The op alone, forward (``torch.no_grad``) and forward + backward, at the encoder shapes
   (queries = all value positions, 4 points per head and level around the query's position,
   2-pixel spread, softmax weights):
   - ``demo``: the demo configs, 4 x 192x256 images, strides 8-64, 8 heads x 16 dims;
   - ``4scale``: one 800x1333 image, strides 8, 16, 32, 64 (100x167 ... 13x21, 22223 queries),
     8 heads x 32 dims (Deformable DETR, Co-Deformable-DETR);
   - ``5scale``: one 800x1333 image, strides 4-64 (200x334 ... 13x21, 89023 queries), 8 x 32
     (Co-DINO).
   Time: best of ``--repeats`` after one warm-up call. Memory: peak extra memory of one call,
   each path in its own subprocess after one small call (CPU: rise of the process's peak RSS
   over its resident size with the inputs built, glibc's mmap threshold at 64 KiB so freed
   tensors leave the resident size; CUDA: peak allocated over allocated).
2. The whole Co-Deformable-DETR R-50 (projects/CoDETR/configs/co_deformable_detr_R50_12ep_coco.py,
   random weights): one training step (forward + backward, 2 random ``--codetr-size`` square
   images with 8 boxes each) and inference (``eval()``, one image at a time), with
   ``MSDeformAttn`` calling the kernel or the reference; rounds alternate between the two
   paths, median over ``--codetr-repeats`` rounds after a warm-up round. Inference also reports
   the ratio of process CPU time (all threads), which other jobs on the machine disturb less.

Ratio = reference / kernel (time or memory). Everything runs on the CPU, and again on the GPU
when one is present. Targets (issue 20): forward + backward >= 2x at ``4scale`` on the CPU,
kernel peak memory <= 1/4 of the reference's, Co-Deformable-DETR CPU inference >= 1.1x.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {
    # (batch, level sizes, heads, dims per head, points)
    "demo": (4, [(24, 32), (12, 16), (6, 8), (3, 4)], 8, 16, 4),
    "4scale": (1, [(100, 167), (50, 84), (25, 42), (13, 21)], 8, 32, 4),
    "5scale": (1, [(200, 334), (100, 167), (50, 84), (25, 42), (13, 21)], 8, 32, 4),
}
CODETR_CONFIG = "projects/CoDETR/configs/co_deformable_detr_R50_12ep_coco.py"


def _paths():
    from d2ext.layers import ms_deform_attn_reference

    return {"kernel": torch.ops.d2ext.ms_deform_attn, "reference": ms_deform_attn_reference}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_inputs(shape: str, device: torch.device, requires_grad: bool, batch: int | None = None):
    """value, spatial_shapes, sampling_locations, attention_weights of an encoder layer: every
    query sits at a pixel centre of its level and samples every level around the same
    normalised point, offsets ~ N(0, 2 pixels) of that level (a trained encoder's spread)."""
    n, levels, m, d, p = SHAPES[shape]
    n = batch or n
    g = torch.Generator().manual_seed(0)
    s = sum(h * w for h, w in levels)
    value = torch.randn(n, s, m, d, generator=g)
    centres = []
    for h, w in levels:
        ys, xs = torch.meshgrid(
            (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij"
        )
        centres.append(torch.stack([xs.flatten(), ys.flatten()], -1))
    centres = torch.cat(centres)  # [S, 2] (x, y)
    pixel = 1.0 / torch.tensor([[w, h] for h, w in levels], dtype=torch.float32)  # [L, 2]
    offsets = torch.randn(n, s, m, len(levels), p, 2, generator=g) * 2 * pixel[:, None]
    loc = centres[None, :, None, None, None] + offsets
    attn = torch.randn(n, s, m, len(levels) * p, generator=g).softmax(-1)
    attn = attn.view(n, s, m, len(levels), p)
    tensors = [t.to(device).requires_grad_(requires_grad) for t in (value, loc, attn)]
    return tensors[0], torch.tensor(levels, device=device), tensors[1], tensors[2]


def _call(fn, inputs, backward: bool):
    value, shapes, loc, attn = inputs
    if not backward:
        with torch.no_grad():
            return fn(value, shapes, loc, attn)
    out = fn(value, shapes, loc, attn)
    out.backward(torch.ones_like(out))
    return None


def best_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_child(shape: str, path: str, backward: bool, device: str) -> int:
    """Bytes of extra peak memory of one call of ``path`` (run in a fresh process)."""
    import d2ext.layers  # noqa: F401  (loads d2ext._C and registers the op's autograd)

    device = torch.device(device)
    fn = _paths()[path]
    # one small call first: thread pools, autograd engine, CUDA context and allocator
    _call(fn, make_inputs("demo", device, backward, batch=1), backward)
    inputs = make_inputs(shape, device, requires_grad=backward)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _call(fn, inputs, backward)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _rss_bytes("VmRSS")
    try:  # reset the peak (VmHWM) to the current resident size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then VmHWM is the peak since start; the inputs were built below it
    _call(fn, inputs, backward)
    return _rss_bytes("VmHWM") - base


def measure_memory(shape: str, path: str, backward: bool, device: torch.device) -> int:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", shape, path]
    cmd += ["--child-backward", str(int(backward)), "--child-device", str(device)]
    # every allocation of 64 KiB or more gets its own mapping, returned to the system when
    # freed, so the resident size follows the live tensors rather than glibc's heap
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return int(out.strip().splitlines()[-1])


def bench_op(shapes: list[str], device: torch.device, repeats: int) -> list[dict]:
    rows = []
    paths = _paths()
    for shape in shapes:
        n, levels, m, d, p = SHAPES[shape]
        for backward in (False, True):
            inputs = make_inputs(shape, device, requires_grad=backward)
            row = {"shape": shape, "pass": "fwd+bwd" if backward else "fwd"}
            for name, fn in paths.items():
                row[f"{name}_ms"] = 1e3 * best_time(
                    lambda fn=fn, x=inputs, b=backward: _call(fn, x, b), device, repeats
                )
                for t in inputs:
                    t.grad = None
            del inputs
            for name in paths:
                row[f"{name}_MiB"] = measure_memory(shape, name, backward, device) / 2**20
            row["speed-up"] = row["reference_ms"] / row["kernel_ms"]
            row["memory ratio"] = row["reference_MiB"] / max(row["kernel_MiB"], 1e-3)
            rows.append(row)
            print(
                f"{device.type:<5}{shape:<8}{row['pass']:<9}"
                f"{row['kernel_ms']:>10.1f}{row['reference_ms']:>12.1f}{row['speed-up']:>9.2f}x"
                f"{row['kernel_MiB']:>12.1f}{row['reference_MiB']:>12.1f}"
                f"{row['memory ratio']:>9.1f}x",
                flush=True,
            )
    return rows


def bench_codetr(device: torch.device, size: int, repeats: int, train: bool = True) -> dict:
    from detectron2.config import LazyConfig, instantiate
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from d2ext.layers import ms_deform_attn, ms_deform_attn_reference
    from d2ext.modeling.deformable_detr import ms_deform_attn as msda_module

    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(os.path.join(REPO, CODETR_CONFIG)).model).to(device)
    gen = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(2):
        xy = torch.rand(8, 2, generator=gen) * size * 0.7
        wh = torch.rand(8, 2, generator=gen) * size * 0.3 + 16
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1).clamp(max=size))
        inst.gt_classes = torch.randint(model.num_classes, (8,), generator=gen)
        image = (torch.rand(3, size, size, generator=gen) * 255).to(device)
        batch.append({"image": image, "instances": inst.to(device), "height": size, "width": size})
    paths = {"kernel": ms_deform_attn, "reference": ms_deform_attn_reference}
    original = msda_module.multi_scale_deformable_attn

    def infer():
        with torch.no_grad():
            for x in batch:
                model([x])

    def train_step():
        model.zero_grad(set_to_none=True)
        with EventStorage(0):
            sum(model(batch).values()).backward()

    times = {f"{p}_{w}": [] for p in paths for w in ("infer", "train", "infer_cpu")}
    modes = (("infer", infer), ("train", train_step)) if train else (("infer", infer),)
    try:
        for mode, fn in modes:
            model.train(mode == "train")
            for r in range(repeats + 1):
                for name, path in paths.items():
                    msda_module.multi_scale_deformable_attn = path
                    _sync(device)
                    t, c = time.perf_counter(), time.process_time()
                    fn()
                    _sync(device)
                    if r:  # round 0 warms up
                        n_items = len(batch) if mode == "infer" else 1
                        times[f"{name}_{mode}"].append((time.perf_counter() - t) / n_items)
                        if mode == "infer":  # CPU time of all threads: less hit by other jobs
                            cpu = (time.process_time() - c) / n_items
                            times[f"{name}_infer_cpu"].append(cpu)
    finally:
        msda_module.multi_scale_deformable_attn = original
    med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
    return {
        "device": device.type,
        "size": size,
        "inference_s_per_image": {p: med[f"{p}_infer"] for p in paths},
        "inference_speed-up": med["reference_infer"] / med["kernel_infer"],
        "inference_cpu_s_per_image": {p: med[f"{p}_infer_cpu"] for p in paths},
        "inference_cpu_time_ratio": med["reference_infer_cpu"] / med["kernel_infer_cpu"],
        "train_step_s_batch2": {p: med[f"{p}_train"] for p in paths},
        "train_step_speed-up": med["reference_train"] / med["kernel_train"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--codetr-size", type=int, default=512)
    parser.add_argument("--codetr-repeats", type=int, default=3)
    parser.add_argument("--skip-codetr", action="store_true")
    parser.add_argument("--skip-op", action="store_true", help="only the Co-DETR part")
    parser.add_argument("--codetr-infer-only", action="store_true", help="no training step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-backward", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        if args.threads is None and os.environ.get("D2EXT_BENCH_THREADS"):
            torch.set_num_threads(int(os.environ["D2EXT_BENCH_THREADS"]))
        shape, path = args.child
        print(peak_memory_child(shape, path, bool(args.child_backward), args.child_device))
        return None

    from d2ext.layers._ops import C_IMPORT_ERROR, has_kernel

    if C_IMPORT_ERROR is not None:
        raise SystemExit(f"d2ext._C is not built ({C_IMPORT_ERROR}); run `make setup` first")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and has_kernel("ms_deform_attn", "CUDA"):
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32")
    header = (
        f"{'dev':<5}{'shape':<8}{'pass':<9}{'kernel ms':>10}{'ref ms':>12}{'speed-up':>10}"
        f"{'kernel MiB':>12}{'ref MiB':>12}{'mem ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    report = {"op": [], "codetr": []}
    for device in devices:
        report["op"] += [] if args.skip_op else bench_op(args.shapes, device, args.repeats)
    if not args.skip_codetr:
        for device in devices:
            res = bench_codetr(
                device, args.codetr_size, args.codetr_repeats, not args.codetr_infer_only
            )
            report["codetr"].append(res)
            print(
                f"Co-Deformable-DETR R-50 {device.type} {args.codetr_size}x{args.codetr_size}: "
                f"inference {res['inference_s_per_image']['kernel']:.3f} s/image (kernel) vs "
                f"{res['inference_s_per_image']['reference']:.3f} (reference): "
                f"{res['inference_speed-up']:.2f}x (CPU time "
                f"{res['inference_cpu_time_ratio']:.2f}x); training step (2 images) "
                f"{res['train_step_s_batch2']['kernel']:.2f} s vs "
                f"{res['train_step_s_batch2']['reference']:.2f}: "
                f"{res['train_step_speed-up']:.2f}x",
                flush=True,
            )
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
