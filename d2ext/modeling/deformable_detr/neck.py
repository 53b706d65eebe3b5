"""mmdetection's ChannelMapper: each backbone level -> Conv1x1 + GroupNorm(32), plus extra
levels by Conv3x3 stride 2 + GroupNorm(32) (the first one on the last backbone level itself)."""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

__all__ = ["ChannelMapper"]


class ChannelMapper(nn.Module):
    """
    Args:
        input_shapes: the backbone's output shapes, by feature name.
        in_features: the backbone features to map, from the finest to the coarsest.
        out_channels: the channels of every output level.
        num_extra_levels: the number of stride-2 levels added after the last backbone level.
        num_groups: the GroupNorm groups.
    """

    def __init__(
        self,
        *,
        input_shapes: dict[str, ShapeSpec],
        in_features: list[str],
        out_channels: int = 256,
        num_extra_levels: int = 1,
        num_groups: int = 32,
    ):
        super().__init__()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(f"backbone has no feature(s) {missing}; it has {sorted(input_shapes)}")
        self.in_features = list(in_features)

        def conv(cin, k, s):
            return Conv2d(
                cin,
                out_channels,
                kernel_size=k,
                stride=s,
                padding=k // 2,
                norm=nn.GroupNorm(num_groups, out_channels),
            )

        self.convs = nn.ModuleList(conv(input_shapes[f].channels, 1, 1) for f in in_features)
        last = input_shapes[in_features[-1]].channels
        self.extra_convs = nn.ModuleList(
            conv(last if i == 0 else out_channels, 3, 2) for i in range(num_extra_levels)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0)
        strides = [input_shapes[f].stride for f in in_features]
        strides += [strides[-1] * 2 ** (i + 1) for i in range(num_extra_levels)]
        self.strides, self.out_channels = strides, out_channels

    def output_shape(self) -> list[ShapeSpec]:
        """
        Returns:
            list[ShapeSpec]: the channels and stride of every output level.
        """
        return [ShapeSpec(channels=self.out_channels, stride=s) for s in self.strides]

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """
        Args:
            features: the backbone's feature maps, by name.

        Returns:
            list[Tensor]: [N, out_channels, H_l, W_l] per level: the ``in_features`` levels, then
            the extra levels.
        """
        ins = [features[f] for f in self.in_features]
        outs = [conv(x) for conv, x in zip(self.convs, ins)]
        for i, conv in enumerate(self.extra_convs):
            outs.append(conv(ins[-1] if i == 0 else outs[-1]))
        return outs
