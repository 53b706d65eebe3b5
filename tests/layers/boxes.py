"""Random boxes with the awkward cases every op test covers."""

import torch


def awkward_boxes(n: int, dtype=torch.float32, seed: int = 0, image: int = 800) -> torch.Tensor:
    """[n, 4] XYXY boxes: ordinary ones mixed with zero-area, zero-width, inverted (both sides
    negative, so a positive area), 1-2 px and out-of-image boxes. No box has negative area."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * image
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) ** 2 * image
    kind = torch.randint(0, 8, (n,), generator=g)
    wh[kind == 1] = 0  # zero area
    wh[kind == 2, 0] = 0  # zero width
    wh[kind == 3] = -wh[kind == 3] - 2  # inverted in x and y (also with inclusive +1 widths)
    wh[kind == 4] = torch.rand(int((kind == 4).sum()), 2, generator=g, dtype=torch.float64) * 2
    xy[kind == 5] = xy[kind == 5] - image  # starts outside the image
    xy[kind == 6] = xy[kind == 6] + image  # lies beyond the image
    return torch.cat([xy, xy + wh], dim=1).to(dtype)
