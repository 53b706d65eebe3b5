"""Multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021).

:func:`ms_deform_attn` runs the compiled ``d2ext::ms_deform_attn`` kernel (CPU or CUDA, with its
backward registered for autograd) when ``d2ext._C`` has one for the inputs' device, and
otherwise :func:`ms_deform_attn_reference`, the pure-torch ``F.grid_sample`` path, logging the
fallback once. Both sample bilinearly with zero padding and ``align_corners=False``, as the
authors' CUDA kernel does: a location (x, y) of an H x W level reads pixel coordinates
(x W - 0.5, y H - 0.5).

The one difference between the two is on a measure-zero set: a point exactly on the outer
border of the padding (x W - 0.5 = -1 or y H - 0.5 = -1), where the sample is 0 either way,
gets zero location gradient from the kernel (the authors' rule: it is outside) and
``grid_sample``'s one-sided derivative from the reference.
"""

import torch
import torch.nn.functional as F

from ._ops import check, use_compiled

__all__ = ["ms_deform_attn", "ms_deform_attn_reference"]

_OP = "d2ext::ms_deform_attn"


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> list[tuple[int, int]]:
    """The compiled kernels' checks with their messages; returns the (H, W) of every level."""
    check(value.dim() == 4, f"{_OP}: value must have shape [N, S, M, D], got {list(value.shape)}")
    check(
        spatial_shapes.dim() == 2 and spatial_shapes.shape[1] == 2,
        f"{_OP}: spatial_shapes must have shape [L, 2] (H, W per level), got "
        f"{list(spatial_shapes.shape)}",
    )
    check(
        spatial_shapes.dtype == torch.int64,
        f"{_OP}: spatial_shapes must be int64, got {spatial_shapes.dtype}",
    )
    n, s, m, _ = value.shape
    num_levels = spatial_shapes.shape[0]
    loc = sampling_locations
    check(
        loc.dim() == 6
        and (loc.shape[0], loc.shape[2], loc.shape[3], loc.shape[5]) == (n, m, num_levels, 2),
        f"{_OP}: sampling_locations must have shape [N, Q, M, L, P, 2] with N = {n}, M = {m}, "
        f"L = {num_levels}, got {list(loc.shape)}",
    )
    q, p = loc.shape[1], loc.shape[4]
    check(
        tuple(attention_weights.shape) == (n, q, m, num_levels, p),
        f"{_OP}: attention_weights must have shape [N, Q, M, L, P] = "
        f"{[n, q, m, num_levels, p]}, got {list(attention_weights.shape)}",
    )
    check(
        value.dtype in (torch.float32, torch.float64),
        f"{_OP}: value must be float32 or float64, got {value.dtype}",
    )
    check(
        loc.dtype == value.dtype and attention_weights.dtype == value.dtype,
        f"{_OP}: sampling_locations and attention_weights must have the dtype of value "
        f"({value.dtype}), got {loc.dtype} and {attention_weights.dtype}",
    )
    devices = [t.device for t in (value, spatial_shapes, loc, attention_weights)]
    check(
        all(dev == value.device for dev in devices),
        f"{_OP}: value, spatial_shapes, sampling_locations and attention_weights are on "
        f"different devices ({', '.join(map(str, devices))})",
    )
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    for lvl, (h, w) in enumerate(shapes):
        check(
            h > 0 and w > 0,
            f"{_OP}: level {lvl} has size {h}x{w}; spatial_shapes must be positive",
        )
    total = sum(h * w for h, w in shapes)
    check(
        total == s,
        f"{_OP}: spatial_shapes ({', '.join(f'{h}x{w}' for h, w in shapes)}) do not add up to "
        f"S = {s} (value.size(1)): they hold {total} values",
    )
    return shapes


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Pure-torch reference of :func:`ms_deform_attn`: every level sampled with
    ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``), then weighted and
    summed. It keeps every sampled value, [N * M, D, Q, L * P], for its backward.

    Args and Returns: as :func:`ms_deform_attn`.
    """
    shapes = _check_inputs(value, spatial_shapes, sampling_locations, attention_weights)
    n, _, m, d = value.shape
    _, q, _, num_levels, num_points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        v = values[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        # [N, Q, M, P, 2] -> [N*M, Q, P, 2]
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # [N*M, D, Q, P]
    # [N, Q, M, L, P] -> [N*M, 1, Q, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, q, num_levels * num_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # [N*M, D, Q]
    return out.view(n, m * d, q).transpose(1, 2).contiguous()


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention: for every query and head, the attention-weighted sum
    of bilinear samples of the value maps at L * P locations,

        out[n, q, m] = sum_{l, p} A[n, q, m, l, p] * bilinear(value_l[n, :, m], loc[n, q, m, l, p]),

    where a location (x, y) in [0, 1] reads pixel (x W_l - 0.5, y H_l - 0.5) of level l and
    pixels outside the map are zeros. Differentiable in value, sampling_locations and
    attention_weights.

    Args:
        value: [N, S, M, D] float32/float64, the per-head values of all levels flattened level
            after level (S = sum of H_l * W_l).
        spatial_shapes: [L, 2] int64, (H_l, W_l) per level, on value's device.
        sampling_locations: [N, Q, M, L, P, 2], (x, y) normalised to each level's map.
        attention_weights: [N, Q, M, L, P] (the model softmax-normalises them over L * P).

    Returns:
        [N, Q, M * D], value's dtype and device (float32 under autocast).
    """
    if torch.is_autocast_enabled(value.device.type):
        # as F.grid_sample does under autocast, the op runs in float32
        value, sampling_locations, attention_weights = (
            t.float() for t in (value, sampling_locations, attention_weights)
        )
    if use_compiled("ms_deform_attn", value):
        return torch.ops.d2ext.ms_deform_attn(
            value, spatial_shapes, sampling_locations, attention_weights
        )
    return ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights)
