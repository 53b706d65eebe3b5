import pytest
import torch

from d2ext.layers import box_jitter, box_jitter_reference, clip_boxes_to_view
from d2ext.layers._ops import has_kernel

from .boxes import awkward_boxes

SIZES = [0, 1, 1025, 10**6]
DTYPES = [torch.float32, torch.float64]
requires_C = pytest.mark.skipif(not has_kernel("box_jitter", "CPU"), reason="d2ext._C not built")


def _rand(n, dtype, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 5, generator=g, dtype=dtype).to(device)


@requires_C
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matches_reference_exactly(n, dtype, device):
    boxes = awkward_boxes(n, dtype).to(device)
    rand = _rand(n, dtype, device)
    out = torch.ops.d2ext.box_jitter(boxes, rand, 0.5, 0.1)
    ref = box_jitter_reference(boxes.cpu(), rand.cpu(), 0.5, 0.1)
    assert out.dtype == dtype and out.shape == (n, 4)
    torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=0)


def test_reference_is_soco_formula_on_a_worked_example():
    # Box (10, 20, 29, 59): inclusive w = 20, h = 40.
    boxes = torch.tensor([[10.0, 20.0, 29.0, 59.0], [10.0, 20.0, 29.0, 59.0]], dtype=torch.float64)
    # u = 0.1 * (2 * rand - 1): rand 1 -> +0.1, 0 -> -0.1, 0.75 -> +0.05, 0.5 -> 0.
    rand = torch.tensor(
        [[0.2, 1.0, 0.0, 0.75, 0.5], [0.7, 1.0, 0.0, 0.75, 0.5]], dtype=torch.float64
    )
    out = box_jitter(boxes, 0.5, 0.1, rand=rand)
    # x1' = 10 + 0.1 * 20 = 12; y1' = 20 - 0.1 * 40 = 16; w' = 20 * 1.05 = 21; h' = 40.
    torch.testing.assert_close(out[0], torch.tensor([12.0, 16.0, 32.0, 55.0], dtype=torch.float64))
    torch.testing.assert_close(out[1], boxes[1])  # rand[0] = 0.7 >= p: untouched
    torch.testing.assert_close(box_jitter_reference(boxes, rand), out, rtol=0, atol=0)


def test_statistics_follow_prob_and_ratio():
    boxes = torch.tensor([[100.0, 100.0, 199.0, 299.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    out = box_jitter(boxes, prob=0.3, ratio=0.2, generator=g)
    moved = (out != boxes).any(dim=1)
    assert abs(moved.float().mean().item() - 0.3) < 0.02
    dx = (out[moved, 0] - 100.0) / 100.0  # u0 ~ U(-0.2, 0.2)
    assert dx.min() >= -0.2 - 1e-6 and dx.max() <= 0.2 + 1e-6
    assert abs(dx.std().item() - 0.4 / 12**0.5) < 0.01


def test_no_clip_and_tiny_boxes_can_invert():
    # A 1-px box (w = 1) with w' = 0.9 gives x2' = x1' - 0.1: the jitter does not clip.
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [-50.0, -50.0, 10.0, 10.0]])
    rand = torch.tensor([[0.0, 0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0]])
    out = box_jitter(boxes, rand=rand)
    assert out[0, 2] < out[0, 0] and out[0, 3] < out[0, 1]
    assert out[1, 0] < -50


def test_generator_is_reproducible():
    boxes = awkward_boxes(100)
    a = box_jitter(boxes, generator=torch.Generator().manual_seed(3))
    b = box_jitter(boxes, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@requires_C
@pytest.mark.parametrize("fn", ["kernel", "reference"])
def test_bad_input_raises(fn):
    call = (
        (lambda b, r: torch.ops.d2ext.box_jitter(b, r, 0.5, 0.1))
        if fn == "kernel"
        else (lambda b, r: box_jitter_reference(b, r, 0.5, 0.1))
    )
    b, r = awkward_boxes(4), torch.rand(4, 5)
    with pytest.raises(RuntimeError, match="shape"):
        call(b[:, :3], r)
    with pytest.raises(RuntimeError, match="shape"):
        call(b, r[:3])
    with pytest.raises(RuntimeError, match="float32 or float64"):
        call(b.long(), r)
    with pytest.raises(RuntimeError, match="dtype"):
        call(b, r.double())
    nan = b.clone()
    nan[2, 1] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        call(nan, r)
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        call(b, r * 3)
    raw = torch.ops.d2ext.box_jitter if fn == "kernel" else box_jitter_reference
    with pytest.raises(RuntimeError, match="ratio"):
        raw(b, r, 0.5, 1.5)
    with pytest.raises(RuntimeError, match="prob"):
        raw(b, r, -0.1, 0.1)
    if fn == "kernel":
        if torch.cuda.is_available():
            with pytest.raises(RuntimeError, match="different devices"):
                call(b, r.cuda())
    else:
        with pytest.raises(RuntimeError, match="different devices"):
            call(b, r.to("meta"))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float16, torch.bool])
def test_non_float_boxes_error_names_the_dtype(dtype):
    boxes = torch.tensor([[0, 0, 10, 10], [2, 3, 5, 9]]).to(dtype)
    with pytest.raises(RuntimeError, match=f"float32 or float64, got {dtype}"):
        box_jitter(boxes)  # rand drawn inside: must not fail on the dtype first
    with pytest.raises(RuntimeError, match=f"got {dtype}"):
        box_jitter(boxes, rand=torch.rand(2, 5))


@requires_C
def test_opcheck():
    boxes, rand = awkward_boxes(33), torch.rand(33, 5)
    torch.library.opcheck(torch.ops.d2ext.box_jitter.default, (boxes, rand, 0.5, 0.1))
    torch.library.opcheck(torch.ops.d2ext.box_jitter.default, (boxes[:0], rand[:0], 0.5, 0.1))


def test_clip_to_view_drops_empty_and_falls_back():
    boxes = torch.tensor(
        [
            [-10.0, -10.0, 50.0, 50.0],
            [90.0, 10.0, 200.0, 20.0],
            [5.0, 5.0, 4.9, 6.0],
            [200.0, 0, 300, 5],
        ]
    )
    clipped, keep = clip_boxes_to_view(boxes, height=64, width=100, rule="intersect")
    assert keep.tolist() == [0, 1]  # inverted box 2 and outside box 3 dropped
    torch.testing.assert_close(
        clipped, torch.tensor([[0.0, 0.0, 50.0, 50.0], [90.0, 10.0, 99.0, 20.0]])
    )
    clipped, keep = clip_boxes_to_view(boxes[2:], height=64, width=100, rule="intersect")
    assert keep.tolist() == [-1]
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 99.0, 63.0]]))
    clipped, keep = clip_boxes_to_view(boxes[2:], 64, 100, False, "intersect")
    assert clipped.shape == (0, 4) and keep.numel() == 0


def _soco_clip_bboxs(boxes, height, width):
    """SoCo's clip_bboxs (contrast/data/bboxs_utils.py:18-29, 55-68) for a view at (0, 0),
    transcribed line by line: keep iff ix1 < bx2 and bx1 < ix2 and iy1 < by2 and by1 < iy2."""
    ix1, iy1, ix2, iy2 = 0, 0, width - 1, height - 1
    out, idx = [], []
    for i, (bx1, by1, bx2, by2) in enumerate(boxes.tolist()):
        if ix1 < bx2 and bx1 < ix2 and iy1 < by2 and by1 < iy2:
            out.append([max(ix1, bx1), max(iy1, by1), min(ix2, bx2), min(iy2, by2)])
            idx.append(i)
    if not out:
        return torch.tensor([[0.0, 0, width - 1, height - 1]], dtype=boxes.dtype), [-1]
    return torch.tensor(out, dtype=boxes.dtype), idx


def test_clip_soco_rule_edge_cases():
    """The cases where SoCo's strict rule differs from plain intersection (100x100 view)."""
    cases = [
        ([-5.0, 10, 0, 50], None),  # touches the left edge (x2 = 0): dropped
        ([99.0, 10, 120, 50], None),  # starts at the last column (x1 = W-1): dropped
        ([10.0, -5, 50, 0], None),  # touches the top edge: dropped
        ([10.0, 99, 50, 120], None),  # starts at the last row: dropped
        ([30.0, 10, 29.5, 50], [30.0, 10, 29.5, 50]),  # inverted, inside: kept inverted
        ([10.0, 10, 50, 50], [10.0, 10, 50, 50]),
        ([-5.0, 10, 0.5, 50], [0.0, 10, 0.5, 50]),
        ([-20.0, -20, 200, 200], [0.0, 0, 99, 99]),
        ([98.9, 98.9, 300, 300], [98.9, 98.9, 99, 99]),
    ]
    for box, want in cases:
        clipped, keep = clip_boxes_to_view(torch.tensor([box]), 100, 100)
        if want is None:  # the fallback: the whole view
            assert keep.tolist() == [-1], box
            torch.testing.assert_close(clipped, torch.tensor([[0.0, 0, 99, 99]]))
        else:
            assert keep.tolist() == [0], box
            torch.testing.assert_close(clipped, torch.tensor([want]))
        # the plain rule keeps the edge-touching boxes and drops the inverted one
        _, keep_i = clip_boxes_to_view(torch.tensor([box]), 100, 100, rule="intersect")
        if box in ([-5.0, 10, 0, 50], [99.0, 10, 120, 50]):
            assert keep_i.tolist() == [0]
        if box == [30.0, 10, 29.5, 50]:
            assert keep_i.tolist() == [-1]
    empty, keep = clip_boxes_to_view(torch.zeros(0, 4), 100, 100)
    assert keep.tolist() == [-1] and empty.tolist() == [[0, 0, 99, 99]]
    with pytest.raises(RuntimeError, match="rule"):
        clip_boxes_to_view(torch.zeros(0, 4), 100, 100, rule="clamp")


def test_clip_soco_rule_matches_a_transcription_of_clip_bboxs():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        h, w = torch.randint(2, 60, (2,), generator=g).tolist()
        xy = torch.randint(-20, 70, (30, 2), generator=g).double()
        wh = torch.randint(-3, 40, (30, 2), generator=g).double()
        boxes = torch.cat([xy, xy + wh], dim=1)
        boxes[::3] += 0.5  # some non-integral coordinates
        got, keep = clip_boxes_to_view(boxes, h, w)
        want, idx = _soco_clip_bboxs(boxes, h, w)
        assert keep.tolist() == idx
        torch.testing.assert_close(got, want, rtol=0, atol=0)
