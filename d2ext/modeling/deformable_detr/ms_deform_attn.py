"""Multi-scale deformable attention module (Deformable DETR, Zhu et al. 2021).

``MSDeformAttn`` is the module with the authors' parameterisation and initialisation (offsets
start on a ring of directions, one per head, growing with the point index; uniform attention
weights). It calls ``multi_scale_deformable_attn``, which is :func:`d2ext.layers.ms_deform_attn`:
the compiled kernel of ``d2ext._C`` where one exists for the device, else the pure-torch
``F.grid_sample`` reference (:func:`d2ext.layers.ms_deform_attn_reference`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from d2ext.layers import ms_deform_attn as multi_scale_deformable_attn

__all__ = ["MSDeformAttn", "multi_scale_deformable_attn"]


class MSDeformAttn(nn.Module):
    """Deformable attention over ``n_levels`` feature levels with ``n_points`` samples per head
    and level. ``reference_points`` are (N, Q, L, 2) points or (N, Q, L, 4) boxes (cx, cy, w, h),
    normalised to each level's valid region; with boxes the offsets are scaled by half the box
    size over ``n_points`` (the authors' two-stage / box-refinement rule)."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialises the parameters: zero offset weights with biases on a ring of directions (one
        per head, growing with the point index), zero attention weights and biases (uniform
        attention), xavier-uniform value and output projections with zero biases.
        """
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query (N, Q, C); value (N, S, C); padding_mask (N, S), True at padded positions."""
        n, q, _ = query.shape
        s = value.shape[1]
        m, lv, p = self.n_heads, self.n_levels, self.n_points
        if spatial_shapes.shape[0] != lv:
            raise ValueError(f"got {spatial_shapes.shape[0]} levels, the module has {lv}")
        value = self.value_proj(value)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, s, m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(n, q, m, lv, p, 2)
        weights = self.attention_weights(query).view(n, q, m, lv * p).softmax(-1)
        weights = weights.view(n, q, m, lv, p)
        if reference_points.shape[-1] == 2:
            normaliser = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[
                None, None, None, :, None, :
            ].to(offsets)
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / p * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                f"reference_points must end in 2 or 4 values, got {tuple(reference_points.shape)}"
            )
        out = multi_scale_deformable_attn(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
