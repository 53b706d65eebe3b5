"""Sine embeddings of feature-map positions and of boxes (the DETR family's)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "box_sine_embedding", "inverse_sigmoid"]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [eps, 1 - eps] (the authors' helper)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class PositionEmbeddingSine(nn.Module):
    """Normalised sine embedding of (y, x) over the valid (unpadded) region of each image,
    ``num_feats`` channels per axis: mmdetection's ``SinePositionalEncoding`` with
    ``normalize=True, offset=-0.5`` as Deformable DETR uses it."""

    def __init__(
        self,
        num_feats: int = 128,
        temperature: float = 10000.0,
        scale: float = 2 * math.pi,
        offset: float = -0.5,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.num_feats, self.temperature, self.scale = num_feats, temperature, scale
        self.offset, self.eps = offset, eps

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask (N, H, W), True at padded pixels -> (N, 2 * num_feats, H, W)."""
        not_mask = (~mask).to(torch.float32)
        y = not_mask.cumsum(1)
        x = not_mask.cumsum(2)
        y = (y + self.offset) / (y[:, -1:, :] + self.eps) * self.scale
        x = (x + self.offset) / (x[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_feats)
        pos_x = x[..., None] / dim_t
        pos_y = y[..., None] / dim_t
        n, h, w = mask.shape
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).view(
            n, h, w, -1
        )
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).view(
            n, h, w, -1
        )
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def box_sine_embedding(
    boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0
) -> torch.Tensor:
    """Sine embedding of normalised boxes (..., 4) in [0, 1] -> (..., 4 * num_feats): each
    coordinate times 2 pi through ``num_feats`` interleaved sin / cos frequencies (the
    two-stage query embedding of Deformable DETR and Co-DETR's positive queries)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = boxes.to(torch.float32)[..., None] * (2 * math.pi) / dim_t
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1)
    return pos.flatten(-3)
