"""The embedded demo data: small COCO-format detection datasets made on the machine.

Objects of several shape classes, each a filled polygon with a darker outline, are pasted
without overlap onto crops of real photos that ship with scikit-image and matplotlib (public
domain / CC0, see datasets/README.md). The generator is deterministic: the same seed gives the
same images and annotations. Datasets (names as registered in detectron2's catalogs):

- ``d2ext_demo_shapes_train`` / ``_val``: classes circle, square, triangle, star, cross.
- ``d2ext_demo_signs_train`` / ``_val``: classes triangle, hexagon, ring, rectangle, diamond
  (a different, overlapping vocabulary for multi-dataset training: "triangle" is shared,
  "ring" ~ "circle" and "rectangle" ~ "square" are near neighbours).
- ``d2ext_demo_unlabeled``: images with objects of both vocabularies and no annotations, the
  pool for self-supervised pretraining.
- ``d2ext_demo_synonyms_val``: objects of all nine classes, labelled with near-synonyms
  ("circular disc", "square block", ...) that no training split uses: ScaleDet's zero-shot
  evaluation.

Files live under ``$DETECTRON2_DATASETS/d2ext_demo`` (default ``./datasets``), laid out as
``{images/<split>/*.jpg, annotations/<split>.json}``.
"""

import json
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from d2ext.utils.io import atomic_write_bytes

__all__ = [
    "DEMO_SPLITS",
    "SHAPES_CLASSES",
    "SIGNS_CLASSES",
    "SYNONYMS",
    "demo_root",
    "generate_demo_data",
]

SHAPES_CLASSES = ("circle", "square", "triangle", "star", "cross")
SIGNS_CLASSES = ("triangle", "hexagon", "ring", "rectangle", "diamond")
SYNONYMS = (  # in the order of dict.fromkeys(SHAPES_CLASSES + SIGNS_CLASSES)
    "circular disc",
    "square block",
    "triangular sign",
    "five-pointed star",
    "cross mark",
    "hexagonal tile",
    "ring shape",
    "rectangular box",
    "diamond shape",
)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """One split of the generated demo data.

    Args:
        name: the name the split is registered under in detectron2's ``DatasetCatalog``.
        dirname: its folder under ``images/`` and its json under ``annotations/``.
        classes: the shape classes drawn in its images.
        num_images: the number of images generated.
        seed: the seed of its random generator.
        labeled: whether its json holds annotations.
        names: category names to use instead of ``classes`` (``None``: ``classes``).
    """

    name: str  # registered dataset name
    dirname: str  # folder under images/ and json under annotations/
    classes: tuple[str, ...]
    num_images: int
    seed: int
    labeled: bool = True
    names: tuple[str, ...] | None = None  # category names if not the drawn classes' own

    @property
    def category_names(self) -> tuple[str, ...]:
        """
        Returns:
            tuple[str]: ``names`` if given, else ``classes``.
        """
        return self.names or self.classes


DEMO_SPLITS = (
    Split("d2ext_demo_shapes_train", "shapes_train", SHAPES_CLASSES, 400, 1),
    Split("d2ext_demo_shapes_val", "shapes_val", SHAPES_CLASSES, 80, 2),
    Split("d2ext_demo_signs_train", "signs_train", SIGNS_CLASSES, 300, 3),
    Split("d2ext_demo_signs_val", "signs_val", SIGNS_CLASSES, 80, 4),
    Split(
        "d2ext_demo_unlabeled",
        "unlabeled",
        tuple(dict.fromkeys(SHAPES_CLASSES + SIGNS_CLASSES)),
        400,
        5,
        labeled=False,
    ),
    # Every class of both datasets, named by near-synonyms no training set uses: ScaleDet's
    # zero-shot evaluation (labels never trained).
    Split(
        "d2ext_demo_synonyms_val",
        "synonyms_val",
        tuple(dict.fromkeys(SHAPES_CLASSES + SIGNS_CLASSES)),
        80,
        6,
        names=SYNONYMS,
    ),
)
IMAGE_SIZES = ((240, 320), (320, 240), (288, 288))  # (height, width)


def demo_root(root: str | None = None) -> str:
    """Folder of the demo data: ``root``, else ``$DETECTRON2_DATASETS/d2ext_demo``."""
    if root is None:
        root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "d2ext_demo")
    return os.path.abspath(root)


def _photos() -> list[np.ndarray]:
    """The real photos available offline, as HxWx3 uint8 arrays."""
    import matplotlib
    import skimage.data as data

    photos = [getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    photos += [data.hubble_deep_field(), data.retina()]
    photos += [np.repeat(data.camera()[:, :, None], 3, axis=2)]
    left, right, _ = data.stereo_motorcycle()
    photos += [left, right]
    hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    photos.append(np.asarray(Image.open(hopper).convert("RGB")))
    return photos


def _background(rng: np.random.RandomState, photos, height: int, width: int) -> Image.Image:
    photo = photos[rng.randint(len(photos))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.35, 1.0)
    ch = int(ph * scale)
    cw = min(pw, int(ch * width / height))
    ch = int(cw * height / width)
    y, x = rng.randint(0, ph - ch + 1), rng.randint(0, pw - cw + 1)
    img = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((width, height), Image.BILINEAR)
    if rng.rand() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def _regular(n: int, phase: float, radii=(1.0,)) -> list[tuple[float, float]]:
    pts = []
    for k in range(n * len(radii)):
        r = radii[k % len(radii)]
        a = phase + 2 * math.pi * k / (n * len(radii))
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _outline(cls: str, rng: np.random.RandomState) -> tuple[list, list | None, float]:
    """Unit polygon(s) of a class: (outer, optional hole, aspect = width / height)."""
    turn = rng.uniform(-0.25, 0.25)
    if cls in ("circle", "ring"):
        outer = _regular(40, 0.0)
        return outer, ([(0.5 * x, 0.5 * y) for x, y in outer] if cls == "ring" else None), 1.0
    if cls == "square":
        return _regular(4, math.pi / 4 + turn * 0.3), None, 1.0
    if cls == "rectangle":
        return [(-1, -0.5), (1, -0.5), (1, 0.5), (-1, 0.5)], None, 2.0
    if cls == "triangle":
        return _regular(3, -math.pi / 2 + turn), None, 1.0
    if cls == "star":
        return _regular(5, -math.pi / 2 + turn, radii=(1.0, 0.42)), None, 1.0
    if cls == "hexagon":
        return _regular(6, turn), None, 1.0
    if cls == "diamond":
        return [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], None, 0.6
    if cls == "cross":
        t = 0.33
        pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t)]
        return pts + [(-1, t), (-1, -t), (-t, -t)], None, 1.0
    raise ValueError(f"unknown demo class {cls!r}")


def _place(poly, cx, cy, sx, sy):
    return [(cx + x * sx, cy + y * sy) for x, y in poly]


def _draw_objects(rng, img: Image.Image, classes, max_objects=5) -> list[dict]:
    """Pastes 1..max_objects non-overlapping objects onto ``img``; returns COCO annotations
    (boxes and RLE masks taken from the drawn pixels)."""
    from pycocotools import mask as mask_util

    width, height = img.size
    background = img.copy()  # ring holes show the photo behind them
    draw = ImageDraw.Draw(img)
    placed, anns = [], []
    for _ in range(rng.randint(1, max_objects + 1)):
        cat = rng.randint(len(classes))
        outer, hole, aspect = _outline(classes[cat], rng)
        for _try in range(30):
            size = rng.uniform(22, 110)
            if aspect < 1:
                sx, sy = size / 2 * aspect, size / 2
            else:
                sx, sy = size / 2 * min(aspect, 1.6), size / 2 / max(1.0, aspect / 1.6)
            cx, cy = rng.uniform(sx, width - sx), rng.uniform(sy, height - sy)
            poly = _place(outer, cx, cy, sx, sy)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            box = (min(xs), min(ys), max(xs), max(ys))
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width - 1 and box[3] <= height - 1
            apart = all(
                box[2] + 4 < b[0] or b[2] + 4 < box[0] or box[3] + 4 < b[1] or b[3] + 4 < box[1]
                for b in placed
            )
            if inside and apart:
                break
        else:
            continue
        placed.append(box)
        colour = tuple(int(c) for c in rng.randint(0, 256, 3))
        edge = tuple(int(c * 0.45) for c in colour)
        mask = Image.new("L", img.size, 0)
        mdraw = ImageDraw.Draw(mask)
        draw.polygon(poly, fill=colour, outline=edge, width=2)
        mdraw.polygon(poly, fill=1, outline=1)
        if hole is not None:
            inner = _place(hole, cx, cy, sx, sy)
            hole_mask = Image.new("L", img.size, 0)
            ImageDraw.Draw(hole_mask).polygon(inner, fill=255)
            img.paste(background, (0, 0), hole_mask)
            mdraw.polygon(inner, fill=0, outline=0)
        rle = mask_util.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x0, y0, w, h = (float(v) for v in mask_util.toBbox(rle))
        anns.append(
            {
                "category_id": cat + 1,
                "bbox": [x0, y0, w, h],
                "area": float(mask_util.area(rle)),
                "segmentation": rle,
                "iscrowd": 0,
            }
        )
    return anns


def _generate_split(root: str, split: Split, photos) -> None:
    img_dir = os.path.join(root, "images", split.dirname)
    os.makedirs(img_dir, exist_ok=True)
    rng = np.random.RandomState(split.seed)
    images, annotations = [], []
    for i in range(split.num_images):
        height, width = IMAGE_SIZES[rng.randint(len(IMAGE_SIZES))]
        img = _background(rng, photos, height, width)
        objs = _draw_objects(rng, img, split.classes)
        file_name = f"{i:06d}.jpg"
        buf = _jpeg_bytes(img)
        atomic_write_bytes(os.path.join(img_dir, file_name), buf)
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for obj in objs:
            obj.update(id=len(annotations) + 1, image_id=image_id)
            annotations.append(obj)
    coco = {
        "info": {"description": f"d2ext demo split {split.name}", "version": FORMAT_VERSION},
        "images": images,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(split.category_names)],
    }
    if split.labeled:
        coco["annotations"] = annotations
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    atomic_write_bytes(_json_path(root, split), json.dumps(coco).encode())


def _jpeg_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _json_path(root: str, split: Split) -> str:
    return os.path.join(root, "annotations", f"{split.dirname}.json")


def split_is_complete(root: str, split: Split) -> bool:
    """The json is written last, atomically: its presence with the current version means the
    split is complete."""
    try:
        with open(_json_path(root, split)) as f:
            info = json.load(f)["info"]
        return info.get("version") == FORMAT_VERSION
    except (OSError, ValueError, KeyError):
        return False


def generate_demo_data(root: str | None = None, force: bool = False) -> str:
    """Writes every demo split under ``root`` (see :func:`demo_root`); splits already
    complete are kept unless ``force``. Returns the root."""
    root = demo_root(root)
    photos = None
    for split in DEMO_SPLITS:
        if not force and split_is_complete(root, split):
            continue
        photos = photos if photos is not None else _photos()
        _generate_split(root, split, photos)
    return root
