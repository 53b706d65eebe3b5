"""Reading images robustly and running a selective-search backend on them."""

import numpy as np
from PIL import Image

__all__ = [
    "BACKENDS",
    "ProposalInputError",
    "load_image_rgb",
    "selective_search_reference",
]

MIN_SIDE = 32  # smaller images cannot hold a proposal the filters keep


class ProposalInputError(Exception):
    """An image that cannot be processed; the message is the reason recorded for it."""


def load_image_rgb(path: str, max_pixels: int = 64_000_000) -> np.ndarray:
    """Reads any common image as HxWx3 uint8 RGB.

    Grayscale, palette and RGBA images are converted (alpha dropped), 16- and 32-bit images are
    scaled to 8 bits. Unreadable or corrupt files, images with a side under 32 px and images
    over ``max_pixels`` raise :class:`ProposalInputError` with the reason.
    """
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ProposalInputError(
                    f"image too large ({im.width}x{im.height} > {max_pixels} pixels)"
                )
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
                if mode in ("I", "F") and arr.max() > 65535:
                    top = float(arr.max())
                gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
                rgb = np.repeat(gray[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(im.convert("RGB"))
    except ProposalInputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ProposalInputError(f"unreadable image: {type(e).__name__}: {e}") from e
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ProposalInputError(f"image smaller than {MIN_SIDE} px ({width}x{height})")
    return np.ascontiguousarray(rgb)


def selective_search_reference(
    image_rgb: np.ndarray, scale: float = 300, sigma: float = 0.9, min_size: int = 100
) -> np.ndarray:
    """The ``selectivesearch`` package with SoCo / AlignDet's settings.

    Returns:
        float32 [N, 4] XYWH boxes, one per region in the package's order (duplicates kept, as
        both papers' tools keep them).
    """
    import selectivesearch

    _, regions = selectivesearch.selective_search(
        image_rgb, scale=scale, sigma=sigma, min_size=min_size
    )
    rects = [r["rect"] for r in regions]
    return np.asarray(rects, dtype=np.float32).reshape(-1, 4)


BACKENDS = {"selectivesearch": selective_search_reference}
