"""d2ext::ms_deform_attn (CPU and CUDA kernels, registered backward) against the pure-torch
grid_sample reference, worked examples, borders, empty inputs, the module's padding mask,
gradcheck, opcheck and bad input."""

import logging

import pytest
import torch

from d2ext.layers import _ops, ms_deform_attn, ms_deform_attn_reference
from d2ext.layers._ops import has_kernel
from d2ext.modeling.deformable_detr import MSDeformAttn
from d2ext.modeling.deformable_detr import ms_deform_attn as msda_module

requires_C = pytest.mark.skipif(
    not has_kernel("ms_deform_attn", "CPU"), reason="d2ext._C not built"
)
DTYPES = [torch.float32, torch.float64]
# (level sizes, N, Q, M, D, P): D = 12 and 24 take the CUDA backward's per-thread atomics,
# D = 8 and 32 its warp-segment sums, D = 64 two warps per head.
CASES = {
    "odd_levels": ([(5, 7), (3, 4), (1, 1), (2, 9)], 2, 13, 3, 12, 3),
    "d8": ([(6, 5), (3, 3)], 3, 7, 2, 8, 2),
    "d32": ([(8, 8), (4, 4), (2, 2), (1, 1)], 1, 17, 2, 32, 4),
    "d64_single_level": ([(9, 3)], 2, 5, 1, 64, 5),
    "d24_many_points": ([(4, 6), (2, 3), (1, 2)], 1, 3, 4, 24, 9),
}


def _inputs(shapes, n, q, m, d, p, dtype=torch.float64, device="cpu", seed=0, lo=-0.2, hi=1.2):
    """value, spatial_shapes, sampling_locations in [lo, hi) (partly outside the maps) and
    softmax attention weights, built on the CPU in float64 then moved."""
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=torch.float64)
    loc = torch.rand(n, q, m, len(shapes), p, 2, generator=g, dtype=torch.float64) * (hi - lo) + lo
    attn = torch.randn(n, q, m, len(shapes) * p, generator=g, dtype=torch.float64).softmax(-1)
    attn = attn.view(n, q, m, len(shapes), p)
    tensors = [t.to(dtype=dtype, device=device) for t in (value, loc, attn)]
    return tensors[0], torch.tensor(shapes, device=device), tensors[1], tensors[2]


def _grads(fn, value, shapes, loc, attn, grad_out):
    leaves = [t.detach().requires_grad_() for t in (value, loc, attn)]
    out = fn(leaves[0], shapes, leaves[1], leaves[2])
    grads = torch.autograd.grad(out, leaves, grad_out)
    return out.detach(), grads


def _tol(dtype):
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-10}
    return {"rtol": 1e-4, "atol": 2e-5}


@requires_C
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matches_reference_forward_and_gradients(case, dtype, device):
    shapes, n, q, m, d, p = CASES[case]
    value, sh, loc, attn = _inputs(shapes, n, q, m, d, p, dtype, device)
    grad_out = torch.randn(n, q, m * d, generator=torch.Generator().manual_seed(1)).to(value)
    out, grads = _grads(torch.ops.d2ext.ms_deform_attn, value, sh, loc, attn, grad_out)
    # the reference in float64 on the CPU
    ref, ref_grads = _grads(
        ms_deform_attn_reference,
        *(t.cpu().double() if t.is_floating_point() else t.cpu() for t in (value, sh, loc, attn)),
        grad_out.cpu().double(),
    )
    assert out.dtype == dtype and out.device == value.device and out.shape == (n, q, m * d)
    torch.testing.assert_close(out.cpu().double(), ref, **_tol(dtype))
    for name, g, r in zip(("value", "sampling_locations", "attention_weights"), grads, ref_grads):
        assert g.shape == r.shape and g.dtype == dtype, name
        # location gradients carry a factor W or H: scale the tolerance with them
        scale = max(1.0, r.abs().max().item())
        torch.testing.assert_close(
            g.cpu().double() / scale, r / scale, **_tol(dtype), msg=lambda s, n=name: f"{n}: {s}"
        )
    assert ref_grads[1].abs().sum() > 0 and ref_grads[0].abs().sum() > 0  # non-trivial case


@requires_C
def test_one_pixel_level_worked_example(device):
    # A 1x1 level holds one pixel, at pixel coordinate (0, 0): a location (x, y) reads it with
    # weight (1 - |x - 0.5|) (1 - |y - 0.5|) and reads nothing once |x - 0.5| >= 1.
    value = torch.tensor([[[[2.0, -4.0]]]], dtype=torch.float64, device=device)  # N=S=M=1, D=2
    xs = [0.5, 0.75, 0.0, -0.25, 1.4, 1.5, -0.5, 2.0]
    expected_w = [1.0, 0.75, 0.5, 0.25, 0.1, 0.0, 0.0, 0.0]
    loc = torch.tensor([[x, 0.5] for x in xs], dtype=torch.float64, device=device)
    loc = loc.view(1, len(xs), 1, 1, 1, 2)
    attn = torch.full((1, len(xs), 1, 1, 1), 0.5, dtype=torch.float64, device=device)
    shapes = torch.tensor([[1, 1]], device=device)
    out = torch.ops.d2ext.ms_deform_attn(value, shapes, loc, attn)
    expected = 0.5 * torch.tensor(expected_w, dtype=torch.float64)[:, None] * value.cpu()[0, 0, 0]
    torch.testing.assert_close(out.cpu()[0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        out, ms_deform_attn_reference(value, shapes, loc, attn), rtol=1e-12, atol=1e-12
    )


def _border_grid(h, w):
    """Locations whose pixel coordinates are exactly -1.5, -1, -0.5, 0, the middle, the last
    pixel, H - 0.5, H and H + 0.5 along each axis (exact in binary for power-of-two maps)."""
    coords_h = [-1.5, -1.0, -0.5, 0.0, h / 2 - 0.5, h - 1.0, h - 0.5, float(h), h + 0.5]
    coords_w = [-1.5, -1.0, -0.5, 0.0, w / 2 - 0.5, w - 1.0, w - 0.5, float(w), w + 0.5]
    pix = torch.tensor([(cw, ch) for ch in coords_h for cw in coords_w], dtype=torch.float64)
    loc = (pix + 0.5) / torch.tensor([w, h], dtype=torch.float64)
    return pix, loc


@requires_C
@pytest.mark.parametrize("dtype", DTYPES)
def test_points_outside_and_exactly_on_borders(dtype, device):
    h, w, d = 4, 8, 5
    pix, loc = _border_grid(h, w)
    k = pix.shape[0]
    g = torch.Generator().manual_seed(3)
    value = torch.randn(1, h * w, 1, d, generator=g, dtype=dtype).to(device)
    sh = torch.tensor([[h, w]], device=device)
    loc_t = loc.to(dtype).view(1, k, 1, 1, 1, 2).to(device)
    attn = (torch.rand(1, k, 1, 1, 1, generator=g, dtype=dtype) + 0.5).to(device)
    grad_out = torch.randn(1, k, d, generator=g, dtype=dtype).to(device)
    out, (gv, gl, ga) = _grads(torch.ops.d2ext.ms_deform_attn, value, sh, loc_t, attn, grad_out)
    ref, (rv, rl, ra) = _grads(
        ms_deform_attn_reference, value.cpu(), sh.cpu(), loc_t.cpu(), attn.cpu(), grad_out.cpu()
    )
    out, gv, gl, ga = out.cpu(), gv.cpu(), gl.cpu().view(k, 2), ga.cpu().view(k)
    tol = _tol(dtype)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(gv, rv, **tol)
    torch.testing.assert_close(ga, ra.view(k), **tol)
    # outside (-1, H) x (-1, W) a point samples nothing and has no gradient
    outside = (pix[:, 0] <= -1) | (pix[:, 0] >= w) | (pix[:, 1] <= -1) | (pix[:, 1] >= h)
    assert 0 < int(outside.sum()) < k
    assert torch.all(out[0, outside] == 0) and torch.all(ga[outside] == 0)
    assert torch.all(gl[outside] == 0)
    # on the outer border -1 the kernel follows the authors (outside: zero gradient) and
    # grid_sample takes the one-sided derivative; everywhere else the two agree
    on_minus_one = (pix[:, 0] == -1) | (pix[:, 1] == -1)
    scale = max(1.0, rl.abs().max().item())
    torch.testing.assert_close(
        gl[~on_minus_one] / scale, rl.view(k, 2)[~on_minus_one] / scale, **tol
    )
    assert rl.view(k, 2)[on_minus_one].abs().sum() > 0
    # inside points read the map: exact bilinear values at pixel centres and corners
    centre = (pix[:, 0] == 0) & (pix[:, 1] == 0)
    torch.testing.assert_close(
        out[0, centre][0], attn.cpu().view(k)[centre][0] * value.cpu()[0, 0, 0], **tol
    )


@requires_C
@pytest.mark.parametrize("q", [0, 1])
def test_zero_and_one_query(q, device):
    shapes, n, m, d, p = [(3, 5), (1, 1)], 2, 2, 4, 3
    value, sh, loc, attn = _inputs(shapes, n, q, m, d, p, device=device)
    grad_out = torch.ones(n, q, m * d, dtype=torch.float64, device=device)
    out, grads = _grads(torch.ops.d2ext.ms_deform_attn, value, sh, loc, attn, grad_out)
    assert out.shape == (n, q, m * d)
    ref, ref_grads = _grads(ms_deform_attn_reference, value, sh, loc, attn, grad_out)
    torch.testing.assert_close(out, ref, **_tol(torch.float64))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, **_tol(torch.float64))
    if q == 0:
        assert torch.all(grads[0] == 0) and grads[1].numel() == 0 and grads[2].numel() == 0


@requires_C
def test_empty_batch_and_value_only_gradient():
    value, sh, loc, attn = _inputs([(2, 3)], 0, 4, 2, 4, 2)
    assert torch.ops.d2ext.ms_deform_attn(value, sh, loc, attn).shape == (0, 4, 8)
    value, sh, loc, attn = _inputs([(2, 3)], 1, 4, 2, 4, 2)
    v = value.requires_grad_()
    out = torch.ops.d2ext.ms_deform_attn(v, sh, loc, attn)  # loc and attn need no grad
    (g,) = torch.autograd.grad(out.sum(), v)
    v_ref = value.detach().requires_grad_()
    (r,) = torch.autograd.grad(ms_deform_attn_reference(v_ref, sh, loc, attn).sum(), v_ref)
    torch.testing.assert_close(g, r)


@requires_C
@pytest.mark.parametrize("points", ["points", "boxes"])
def test_module_padding_mask_kernel_equals_reference(points, device, monkeypatch):
    torch.manual_seed(0)
    attn_mod = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=3).double().to(device)
    with torch.no_grad():  # spread the offsets so samples cross pixels and borders
        attn_mod.sampling_offsets.weight.normal_(0, 0.5)
        attn_mod.attention_weights.weight.normal_(0, 0.5)
    shapes = torch.tensor([[6, 8], [3, 4], [1, 2]], device=device)
    s = int(shapes.prod(1).sum())
    n, q = 2, 11
    query = torch.randn(n, q, 32, dtype=torch.float64, device=device)
    value = torch.randn(n, s, 32, dtype=torch.float64, device=device)
    ref_pts = torch.rand(n, q, 3, 2 if points == "points" else 4, dtype=torch.float64)
    ref_pts = ref_pts.to(device)
    mask = torch.zeros(n, s, dtype=torch.bool, device=device)
    mask[1, 30:48] = True  # the second image's right part of level 0
    mask[1, -1] = True

    def run(fn, v):
        monkeypatch.setattr(msda_module, "multi_scale_deformable_attn", fn)
        q_ = query.clone().requires_grad_()
        v_ = v.clone().requires_grad_()
        out = attn_mod(q_, ref_pts, v_, shapes, mask)
        grads = torch.autograd.grad(out.square().sum(), [q_, v_, *attn_mod.parameters()])
        return out.detach(), grads

    out_k, grads_k = run(ms_deform_attn, value)
    out_r, grads_r = run(ms_deform_attn_reference, value)
    torch.testing.assert_close(out_k, out_r, rtol=1e-9, atol=1e-9)
    for gk, gr in zip(grads_k, grads_r):
        torch.testing.assert_close(gk, gr, rtol=1e-9, atol=1e-9)
    # padded positions neither contribute nor receive gradient
    changed = value.clone()
    changed[mask] += 100.0
    out_c, grads_c = run(ms_deform_attn, changed)
    torch.testing.assert_close(out_c, out_k, rtol=1e-12, atol=1e-12)
    assert torch.all(grads_k[1][mask] == 0)


@requires_C
def test_gradcheck_float64(device):
    value, sh, loc, attn = _inputs([(3, 4), (2, 2), (1, 1)], 1, 3, 2, 3, 2, device=device)
    # locations away from pixel centres (where bilinear sampling has kinks) and the borders
    loc = loc.clamp(0.05, 0.95)
    inputs = [t.detach().requires_grad_() for t in (value, loc, attn)]
    assert torch.autograd.gradcheck(
        lambda v, sl, a: ms_deform_attn(v, sh, sl, a),
        inputs,
        nondet_tol=1e-12 if device.type == "cuda" else 0.0,
    )


@requires_C
def test_opcheck():
    value, sh, loc, attn = _inputs([(3, 4), (1, 1)], 2, 5, 2, 4, 2)
    args = (value.requires_grad_(), sh, loc.requires_grad_(), attn.requires_grad_())
    torch.library.opcheck(torch.ops.d2ext.ms_deform_attn.default, args)
    torch.library.opcheck(
        torch.ops.d2ext.ms_deform_attn.default, tuple(a.detach() for a in args[:1]) + args[1:]
    )
    grad = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.d2ext.ms_deform_attn_backward.default,
        (grad, *(a.detach() for a in args)),
    )
    empty = _inputs([(2, 2)], 1, 0, 2, 4, 2)
    torch.library.opcheck(torch.ops.d2ext.ms_deform_attn.default, empty)


def test_front_end_falls_back_to_reference_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(_ops, "has_kernel", lambda op, dev: False)
    monkeypatch.setattr(_ops, "_warned", set())
    value, sh, loc, attn = _inputs([(3, 4), (1, 1)], 1, 5, 2, 4, 2)
    with caplog.at_level(logging.WARNING, logger="d2ext.layers._ops"):
        out = ms_deform_attn(value, sh, loc, attn)
        ms_deform_attn(value, sh, loc, attn)
    assert torch.equal(out, ms_deform_attn_reference(value, sh, loc, attn))
    msgs = [r.getMessage() for r in caplog.records if "ms_deform_attn" in r.getMessage()]
    assert len(msgs) == 1 and "pure-torch reference" in msgs[0]


@requires_C
def test_front_end_runs_the_kernel_and_autocasts_to_float32():
    value, sh, loc, attn = _inputs([(3, 4), (1, 1)], 1, 5, 2, 4, 2, dtype=torch.float32)
    v = value.requires_grad_()
    out = ms_deform_attn(v, sh, loc, attn)
    assert "d2ext_ms_deform_attn" in out.grad_fn.name()  # the registered backward
    assert torch.equal(out, torch.ops.d2ext.ms_deform_attn(value, sh, loc, attn))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_amp = ms_deform_attn(value.bfloat16(), sh, loc, attn)
    assert out_amp.dtype == torch.float32
    torch.testing.assert_close(
        out_amp, torch.ops.d2ext.ms_deform_attn(value.bfloat16().float(), sh, loc, attn)
    )


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param("kernel", marks=requires_C),
        "reference",
    ],
)
def test_bad_input_raises(fn):
    call = torch.ops.d2ext.ms_deform_attn if fn == "kernel" else ms_deform_attn_reference
    value, sh, loc, attn = _inputs([(3, 4), (1, 1)], 2, 5, 2, 4, 3)
    with pytest.raises(RuntimeError, match=r"value must have shape \[N, S, M, D\]"):
        call(value[0], sh, loc, attn)
    with pytest.raises(RuntimeError, match=r"sampling_locations must have shape"):
        call(value, sh, loc[:1], attn)  # batch differs
    with pytest.raises(RuntimeError, match=r"sampling_locations must have shape"):
        call(value, sh, loc[:, :, :, :1], attn)  # one level, spatial_shapes has two
    with pytest.raises(RuntimeError, match=r"attention_weights must have shape"):
        call(value, sh, loc, attn[:, :, :, :, :2])  # points differ
    with pytest.raises(RuntimeError, match=r"attention_weights must have shape"):
        call(value, sh, loc, attn[:, :4])  # queries differ
    with pytest.raises(RuntimeError, match=r"spatial_shapes must have shape \[L, 2\]"):
        call(value, sh.view(-1), loc, attn)
    with pytest.raises(RuntimeError, match=r"do not add up to S = 13 .*hold 14"):
        call(value, torch.tensor([[3, 4], [1, 2]]), loc, attn)
    with pytest.raises(RuntimeError, match=r"do not add up to S = 13 .*hold 12"):
        call(value, torch.tensor([[2, 5], [1, 2]]), loc, attn)
    with pytest.raises(RuntimeError, match="must be positive"):
        call(value, torch.tensor([[3, 4], [-1, -1]]), loc, attn)
    with pytest.raises(RuntimeError, match="spatial_shapes must be int64"):
        call(value, sh.int(), loc, attn)
    with pytest.raises(RuntimeError, match="value must be float32 or float64"):
        call(value.half(), sh, loc.half(), attn.half())
    with pytest.raises(RuntimeError, match="must have the dtype of value"):
        call(value, sh, loc.float(), attn)
    with pytest.raises(RuntimeError, match="must have the dtype of value"):
        call(value.float(), sh, loc.float(), attn)
    if fn == "reference":
        with pytest.raises(RuntimeError, match="different devices"):
            call(value, sh, loc.to("meta"), attn)
    elif torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="different devices"):
            call(value.cuda(), sh, loc.cuda(), attn.cuda())  # spatial_shapes on the CPU
        with pytest.raises(RuntimeError, match="different devices"):
            call(value, sh, loc, attn.cuda())


@requires_C
def test_backward_op_checks_grad_output():
    value, sh, loc, attn = _inputs([(3, 4)], 1, 5, 2, 4, 3)
    bwd = torch.ops.d2ext.ms_deform_attn_backward
    with pytest.raises(RuntimeError, match=r"grad_output must have shape \[N, Q, M \* D\]"):
        bwd(torch.zeros(1, 5, 7, dtype=torch.float64), value, sh, loc, attn)
    with pytest.raises(RuntimeError, match="grad_output must have the dtype of value"):
        bwd(torch.zeros(1, 5, 8), value, sh, loc, attn)
