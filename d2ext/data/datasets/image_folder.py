"""A folder of unlabeled images as detectron2 dataset dicts (ImageNet for pretraining)."""

import os

__all__ = ["IMAGE_EXTENSIONS", "image_folder_dicts", "list_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_image_folder(root: str) -> list[tuple[str, str]]:
    """Sorted (path relative to root, path) of every image under ``root`` (recursively)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    paths = [
        os.path.join(d, f)
        for d, _, files in os.walk(root)
        for f in files
        if f.lower().endswith(IMAGE_EXTENSIONS)
    ]
    return sorted((os.path.relpath(p, root), p) for p in paths)


def image_folder_dicts(root: str) -> list[dict]:
    """``{"file_name", "image_id"}`` per image under ``root``; ``image_id`` is the relative
    path, the key ``tools/generate_proposals.py --images root`` stores proposals under.

    Height and width are left out (reading 1.28 M image headers up front is slow); the
    mappers check sizes against the proposal cache instead.
    """
    items = list_image_folder(root)
    if not items:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}")
    return [{"file_name": path, "image_id": key} for key, path in items]
