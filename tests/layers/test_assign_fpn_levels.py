import pytest
import torch
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes

from d2ext.layers import (
    SOCO_THRESHOLDS,
    assign_fpn_levels,
    assign_levels_detectron2,
    assign_levels_detectron2_reference,
    assign_levels_soco,
    assign_levels_soco_reference,
)
from d2ext.layers._ops import has_kernel

from .boxes import awkward_boxes

SIZES = [0, 1, 1025, 10**6]
DTYPES = [torch.float32, torch.float64]
requires_C = pytest.mark.skipif(
    not has_kernel("assign_fpn_levels_log", "CPU"), reason="d2ext._C not built"
)


def _float_neighbourhood(center: float, count: int, dtype) -> torch.Tensor:
    """The 2 * count + 1 consecutive floats of ``dtype`` centred on ``center``."""
    itype = torch.int32 if dtype == torch.float32 else torch.int64
    bits = torch.tensor(center, dtype=dtype).view(itype)
    return (bits + torch.arange(-count, count + 1, dtype=itype)).view(dtype)


def _boundary_boxes(dtype, count=3000) -> torch.Tensor:
    """Square boxes whose sizes sit on and around every level boundary 224 * 2^k and every
    SoCo threshold, where a rule computed with different rounding would disagree."""
    centres = [224 * 2.0**k for k in range(-8, 8)] + [t - 1 for t in SOCO_THRESHOLDS]
    s = torch.cat([_float_neighbourhood(c, count, dtype) for c in centres])
    offset = torch.tensor([0.0, 3.5, 100.25], dtype=dtype).repeat_interleave(1).repeat(len(s))
    s = s.repeat(3)
    return torch.stack([offset, offset, offset + s, offset + s], dim=1)


@requires_C
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_kernel_matches_reference(n, dtype, device):
    boxes = awkward_boxes(n, dtype).to(device)
    out = torch.ops.d2ext.assign_fpn_levels_log(boxes, 2, 5, 224.0, 4)
    ref = assign_levels_detectron2_reference(boxes.cpu(), 2, 5, 224, 4)
    assert out.dtype == torch.int64
    assert torch.equal(out.cpu(), ref)


@requires_C
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clamp_top", [False, True])
def test_threshold_kernel_matches_reference(n, dtype, clamp_top, device):
    boxes = awkward_boxes(n, dtype).to(device)
    out = torch.ops.d2ext.assign_fpn_levels_threshold(boxes, list(SOCO_THRESHOLDS), True, clamp_top)
    ref = assign_levels_soco_reference(boxes.cpu(), SOCO_THRESHOLDS, True, clamp_top)
    assert torch.equal(out.cpu(), ref)


@pytest.mark.parametrize("boxes_fn", ["random", "boundary"])
@pytest.mark.parametrize("levels", [(2, 5), (3, 7), (2, 2), (1, 8)])
def test_log_rule_bit_identical_to_detectron2(boxes_fn, levels):
    # detectron2's Boxes are float32.
    if boxes_fn == "random":
        boxes = awkward_boxes(100_000, torch.float32)
    else:
        boxes = _boundary_boxes(torch.float32)
    lo, hi = levels
    expected = assign_boxes_to_levels([Boxes(boxes[:7]), Boxes(boxes[7:])], lo, hi, 224, 4)
    assert torch.equal(assign_levels_detectron2(boxes, lo, hi, 224, 4), expected)
    assert torch.equal(assign_levels_detectron2_reference(boxes, lo, hi, 224, 4), expected)


@requires_C
@pytest.mark.parametrize("dtype", DTYPES)
def test_boundaries_kernel_vs_reference(dtype):
    boxes = _boundary_boxes(dtype)
    assert torch.equal(
        torch.ops.d2ext.assign_fpn_levels_log(boxes, 2, 5, 224.0, 4),
        assign_levels_detectron2_reference(boxes, 2, 5),
    )
    assert torch.equal(
        assign_levels_soco(boxes, clamp_top=True),
        assign_levels_soco_reference(boxes, clamp_top=True),
    )


def test_soco_rule_worked_example():
    # Inclusive sizes s = x2 - x1 + 1 for squares: 1, 48 | 49, 96 | 97, 192 | 193, 224 | 225
    sides = torch.tensor([1, 48, 49, 96, 97, 192, 193, 224, 225, 1000], dtype=torch.float32)
    boxes = torch.stack([torch.zeros(10), torch.zeros(10), sides - 1, sides - 1], dim=1)
    assert assign_levels_soco(boxes).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, -1, -1]
    assert assign_levels_soco(boxes, clamp_top=True).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
    # Exclusive widths shift every boundary by one pixel: the 49-px box now measures 48.
    assert assign_levels_soco(boxes, inclusive=False).tolist()[:4] == [0, 0, 0, 1]
    # A non-square box: 30 x 120 inclusive -> sqrt(3600) = 60 -> P3.
    assert assign_levels_soco(torch.tensor([[0.0, 0.0, 29.0, 119.0]])).tolist() == [1]
    # The dispatcher.
    assert torch.equal(assign_fpn_levels(boxes, "soco"), assign_levels_soco(boxes))
    assert torch.equal(
        assign_fpn_levels(boxes, "detectron2", min_level=2, max_level=5),
        assign_levels_detectron2(boxes, 2, 5),
    )
    with pytest.raises(ValueError, match="unknown level rule"):
        assign_fpn_levels(boxes, "fpn")


def test_detectron2_rule_worked_example():
    sides = torch.tensor([0.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 5000.0])
    boxes = torch.stack([torch.zeros(8), torch.zeros(8), sides, sides], dim=1)
    assert assign_levels_detectron2(boxes, 2, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("use_kernel", [True, False])
def test_bad_input_raises(use_kernel):
    if use_kernel and not has_kernel("assign_fpn_levels_log", "CPU"):
        pytest.skip("d2ext._C not built")
    if use_kernel:
        log = lambda b: torch.ops.d2ext.assign_fpn_levels_log(b, 2, 5, 224.0, 4)  # noqa: E731
        thr = lambda b: torch.ops.d2ext.assign_fpn_levels_threshold(b, [48.0, 96.0], True, False)  # noqa: E731
    else:
        log = lambda b: assign_levels_detectron2_reference(b, 2, 5)  # noqa: E731
        thr = lambda b: assign_levels_soco_reference(b, [48.0, 96.0])  # noqa: E731
    good = awkward_boxes(5)
    for fn in (log, thr):
        with pytest.raises(RuntimeError, match="shape"):
            fn(good[:, :2])
        with pytest.raises(RuntimeError, match="float32 or float64"):
            fn(good.int())
        bad = good.clone()
        bad[3, 2] = float("nan")
        with pytest.raises(RuntimeError, match="NaN"):
            fn(bad)
        bad[3, 2] = float("inf")
        with pytest.raises(RuntimeError, match="NaN or Inf"):
            fn(bad)
        neg = torch.tensor([[10.0, 10.0, 0.0, 20.0]])  # one side negative: no scale
        with pytest.raises(RuntimeError, match="negative area"):
            fn(neg)
    with pytest.raises(RuntimeError, match="increasing"):
        assign_levels_soco(good, [96.0, 48.0])
    with pytest.raises(RuntimeError, match="min_level"):
        assign_levels_detectron2(good, 5, 2)
    with pytest.raises(RuntimeError, match="at most 8 levels"):
        assign_levels_detectron2(good, 0, 8)
    with pytest.raises(RuntimeError, match="at most 8 levels"):
        assign_levels_detectron2_reference(good, 0, 8)


@requires_C
def test_opcheck():
    boxes = awkward_boxes(65)
    torch.library.opcheck(torch.ops.d2ext.assign_fpn_levels_log.default, (boxes, 2, 5, 224.0, 4))
    torch.library.opcheck(
        torch.ops.d2ext.assign_fpn_levels_threshold.default,
        (boxes, [48.0, 96.0, 192.0, 224.0], True, False),
    )
    torch.library.opcheck(
        torch.ops.d2ext.assign_fpn_levels_log.default, (boxes[:0], 2, 5, 224.0, 4)
    )


def test_eps_is_the_installed_detectron2s():
    import inspect

    from detectron2.modeling import poolers

    from d2ext.layers.assign_fpn_levels import DETECTRON2_EPS

    src = inspect.getsource(poolers.assign_boxes_to_levels)
    assert "+ 1e-8" in src and DETECTRON2_EPS == 1e-8
