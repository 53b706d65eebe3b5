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
- ``d2ext_demo_unlabeled_large`` / ``_heldout``: unlabeled pools of 1-3 objects of 150-210 px
  per image (every class but the 4:1 rectangle), sizes that SoCo's proposal filter
  ``ratio3size0308`` keeps; their jsons keep the boxes (:func:`split_boxes`,
  :func:`write_ground_truth_proposals`), their dataset dicts carry none.
- ``d2ext_demo_shapes_train_10pct``: a deterministic 10 % of ``d2ext_demo_shapes_train`` with
  every class (:data:`DEMO_SUBSETS`, :func:`subset_indices`).

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
    "DEMO_SUBSETS",
    "LARGE_POOL_CLASSES",
    "SHAPES_CLASSES",
    "SIGNS_CLASSES",
    "SYNONYMS",
    "Subset",
    "demo_root",
    "generate_demo_data",
    "get_split",
    "register_demo_subsets",
    "split_boxes",
    "subset_indices",
    "write_ground_truth_proposals",
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
# the large pool's classes: all but "rectangle", whose 4:1 boxes SoCo's aspect bound (3) drops
LARGE_POOL_CLASSES = tuple(
    c for c in dict.fromkeys(SHAPES_CLASSES + SIGNS_CLASSES) if c != "rectangle"
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
        labeled: whether its dataset dicts carry annotations.
        names: category names to use instead of ``classes`` (``None``: ``classes``).
        object_size: (low, high) of the uniform draw of an object's size in pixels: the
            scale of its class outline, whose box is then at most that size high and 1.6x
            that size wide (``_draw_objects``).
        max_objects: objects per image are drawn from 1..max_objects (fewer when they do not
            fit without overlap in 30 tries).
        store_boxes: for an unlabeled split, write its objects' boxes into its json all the
            same (its dataset dicts stay without annotations): the ground truth that
            :func:`split_boxes` reads for oracle proposals and pool measurements.
    """

    name: str  # registered dataset name
    dirname: str  # folder under images/ and json under annotations/
    classes: tuple[str, ...]
    num_images: int
    seed: int
    labeled: bool = True
    names: tuple[str, ...] | None = None  # category names if not the drawn classes' own
    object_size: tuple[float, float] = (22.0, 110.0)
    max_objects: int = 5
    store_boxes: bool = False

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
    # A pool whose objects SoCo's proposal filter keeps (ratio3size0308: aspect <= 3,
    # sqrt(wh) / sqrt(HW) in [0.3, 0.8]): objects of 150-210 px, 1-3 per image, every class
    # but the 4:1 rectangle. Unlabeled; the json keeps the boxes (oracle proposals).
    Split(
        "d2ext_demo_unlabeled_large",
        "unlabeled_large",
        LARGE_POOL_CLASSES,
        400,
        7,
        labeled=False,
        object_size=(150.0, 210.0),
        max_objects=3,
        store_boxes=True,
    ),
    # The same distribution, other images: held out of pretraining for its diagnostics.
    Split(
        "d2ext_demo_unlabeled_large_heldout",
        "unlabeled_large_heldout",
        LARGE_POOL_CLASSES,
        100,
        8,
        labeled=False,
        object_size=(150.0, 210.0),
        max_objects=3,
        store_boxes=True,
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


def _draw_objects(
    rng, img: Image.Image, classes, max_objects=5, object_size=(22.0, 110.0)
) -> list[dict]:
    """Pastes 1..max_objects non-overlapping objects of size uniform in ``object_size`` onto
    ``img``; returns COCO annotations (boxes and RLE masks taken from the drawn pixels)."""
    from pycocotools import mask as mask_util

    width, height = img.size
    background = img.copy()  # ring holes show the photo behind them
    draw = ImageDraw.Draw(img)
    placed, anns = [], []
    for _ in range(rng.randint(1, max_objects + 1)):
        cat = rng.randint(len(classes))
        outer, hole, aspect = _outline(classes[cat], rng)
        for _try in range(30):
            size = rng.uniform(*object_size)
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


def _render_split(split: Split, photos):
    """Yields, image by image, (COCO image record, JPEG bytes, its COCO annotations without
    ids) of ``split``: what :func:`_generate_split` writes."""
    rng = np.random.RandomState(split.seed)
    for i in range(split.num_images):
        height, width = IMAGE_SIZES[rng.randint(len(IMAGE_SIZES))]
        img = _background(rng, photos, height, width)
        objs = _draw_objects(rng, img, split.classes, split.max_objects, split.object_size)
        image = {"id": i + 1, "file_name": f"{i:06d}.jpg", "height": height, "width": width}
        yield image, _jpeg_bytes(img), objs


def _generate_split(root: str, split: Split, photos) -> None:
    img_dir = os.path.join(root, "images", split.dirname)
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for image, buf, objs in _render_split(split, photos):
        atomic_write_bytes(os.path.join(img_dir, image["file_name"]), buf)
        images.append(image)
        for obj in objs:
            obj.update(id=len(annotations) + 1, image_id=image["id"])
            annotations.append(obj)
    coco = {
        "info": {"description": f"d2ext demo split {split.name}", "version": FORMAT_VERSION},
        "images": images,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(split.category_names)],
    }
    if split.labeled or split.store_boxes:
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


def generate_demo_data(root: str | None = None, force: bool = False, splits=None) -> str:
    """Writes the demo splits under ``root`` (see :func:`demo_root`).

    Args:
        root: the folder (None: :func:`demo_root`).
        force: regenerate splits already complete too (otherwise they are not touched: a run
            after new splits were added writes only those).
        splits: the :class:`Split` s to write (None: every split of ``DEMO_SPLITS``).

    Returns:
        str: the root.
    """
    root = demo_root(root)
    photos = None
    for split in DEMO_SPLITS if splits is None else splits:
        if not force and split_is_complete(root, split):
            continue
        photos = photos if photos is not None else _photos()
        _generate_split(root, split, photos)
    return root


def get_split(name: str) -> Split:
    """
    Args:
        name: a registered demo split's name.

    Returns:
        Split: its entry of ``DEMO_SPLITS``.

    Raises:
        KeyError: no demo split has that name.
    """
    for split in DEMO_SPLITS:
        if split.name == name:
            return split
    raise KeyError(f"no demo split {name!r}; demo splits: {[s.name for s in DEMO_SPLITS]}")


def _xyxy(bboxes_xywh) -> np.ndarray:
    b = np.asarray(bboxes_xywh, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def split_boxes(name: "str | Split", root: str | None = None) -> list[dict]:
    """The ground-truth boxes of every object of a generated demo split, labelled or not.

    Read from the split's json where it holds them (labelled splits, ``store_boxes``);
    otherwise the split is rendered again in memory and every rendered image is checked to
    be byte-identical to its file on disk, so the boxes are those of the images there.

    Args:
        name: the split's registered name (or its :class:`Split`).
        root: the demo data folder (None: :func:`demo_root`).

    Returns:
        list[dict]: per image, in file order: ``image_id``, ``file_name`` (base name),
        ``height``, ``width``, ``boxes`` (float32 [N, 4] XYXY pixels), ``category_ids``
        (int64 [N], the json's 1-based ids).

    Raises:
        FileNotFoundError: the split is not generated under ``root``.
        ValueError: a rendered image differs from its file (generated by another version).
    """
    split = name if isinstance(name, Split) else get_split(name)
    name, root = split.name, demo_root(root)
    if not split_is_complete(root, split):
        raise FileNotFoundError(
            f"demo split {name!r} is not generated under {root}; run datasets/prepare_demo.py"
        )
    with open(_json_path(root, split)) as f:
        coco = json.load(f)
    if "annotations" in coco:
        records = [dict(im, anns=[]) for im in coco["images"]]
        by_id = {r["id"]: r for r in records}
        for ann in coco["annotations"]:
            by_id[ann["image_id"]]["anns"].append(ann)
    else:
        records = []
        img_dir = os.path.join(root, "images", split.dirname)
        for image, buf, objs in _render_split(split, _photos()):
            with open(os.path.join(img_dir, image["file_name"]), "rb") as f:
                if f.read() != buf:
                    raise ValueError(
                        f"{img_dir}/{image['file_name']} differs from what this generator "
                        f"renders for {name!r}: regenerate the split (prepare_demo.py --force)"
                    )
            records.append(dict(image, anns=objs))
    return [
        {
            "image_id": r["id"],
            "file_name": r["file_name"],
            "height": r["height"],
            "width": r["width"],
            "boxes": _xyxy([a["bbox"] for a in r["anns"]]),
            "category_ids": np.array([a["category_id"] for a in r["anns"]], dtype=np.int64),
        }
        for r in records
    ]


def write_ground_truth_proposals(
    name: "str | Split", cache_dir: str, root: str | None = None
) -> int:
    """Writes a demo split's ground-truth boxes, class-agnostic, as a proposal cache that
    :class:`d2ext.proposals.DatasetProposals` reads (keys: image ids): the oracle's proposals
    for the pretraining demos. The boxes are stored as they are (continuous XYXY, x2 = x1 +
    width) and the cache records ``box_convention: "continuous"``, so the pretraining mappers,
    which read inclusive-pixel boxes through ``DatasetProposals``, get exactly these boxes.
    Resumable: images already in the cache are kept.

    Args:
        name: the split's registered name (or its :class:`Split`).
        cache_dir: the cache folder; its ``settings.json`` records ``backend:
            "ground_truth"``, the split and the box convention, so a cache of other proposals
            there is refused. A ground-truth cache of the split recorded without the box
            convention (written by an earlier d2ext, the same boxes) is rewritten.
        root: the demo data folder (None: :func:`demo_root`).

    Returns:
        int: the number of images written in this call.
    """
    from d2ext.proposals import ProposalWriter
    from d2ext.proposals.cache import SETTINGS_FILE

    split = name if isinstance(name, Split) else get_split(name)
    legacy = {"format": 1, "backend": "ground_truth", "dataset": split.name, "filter": None}
    settings = dict(legacy, box_convention="continuous")
    recorded = None
    if os.path.isfile(os.path.join(cache_dir, SETTINGS_FILE)):
        with open(os.path.join(cache_dir, SETTINGS_FILE)) as f:
            recorded = json.load(f)
    written = 0
    with ProposalWriter(cache_dir, settings=settings, overwrite=recorded == legacy) as writer:
        done = writer.done_keys()
        for rec in split_boxes(split, root):
            if str(rec["image_id"]) not in done:
                writer.add(str(rec["image_id"]), (rec["height"], rec["width"]), rec["boxes"])
                written += 1
    return written


@dataclass(frozen=True)
class Subset:
    """A deterministic subset of a labelled demo split (the low-label protocol).

    Args:
        name: the name it is registered under.
        parent: the labelled split it draws images from.
        fraction: the share of the parent's images kept (rounded; at least one image per
            class).
        seed: the seed of the draw.
    """

    name: str
    parent: str
    fraction: float
    seed: int


DEMO_SUBSETS = (Subset("d2ext_demo_shapes_train_10pct", "d2ext_demo_shapes_train", 0.1, 0),)


def subset_indices(dicts: list[dict], fraction: float, seed: int, num_classes: int) -> list[int]:
    """Indices (ascending) of a deterministic subset of labelled dataset dicts holding every
    class: in the order of a permutation drawn with ``seed``, images are first taken while
    they add a class not yet covered, then in that order up to ``round(fraction * len)``.

    Args:
        dicts: detectron2 dataset dicts with ``annotations``.
        fraction: the share of images kept, in (0, 1].
        seed: the permutation's seed.
        num_classes: the number of classes (contiguous ids 0..num_classes-1).

    Returns:
        list[int]: the kept indices.

    Raises:
        ValueError: a fraction outside (0, 1], or a class that no image holds.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    classes = [{a["category_id"] for a in d.get("annotations", [])} for d in dicts]
    missing = set(range(num_classes)) - set().union(*classes)
    if missing:
        raise ValueError(f"classes {sorted(missing)} have no image to draw a subset from")
    order = np.random.RandomState(seed).permutation(len(dicts)).tolist()
    chosen, covered = [], set()
    for i in order:
        if classes[i] - covered:
            chosen.append(i)
            covered |= classes[i]
        if len(covered) == num_classes:
            break
    target = max(round(fraction * len(dicts)), len(chosen))
    taken = set(chosen)
    for i in order:
        if len(chosen) >= target:
            break
        if i not in taken:
            chosen.append(i)
            taken.add(i)
    return sorted(chosen)


def register_demo_subsets() -> None:
    """Registers every subset of ``DEMO_SUBSETS`` in detectron2's catalogs (after the parent
    splits; re-registering is a no-op). A subset's dicts are drawn from the parent's as
    registered when it is loaded; its metadata copies the parent's classes, without a json
    (an evaluator on it converts the subset itself)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for sub in DEMO_SUBSETS:
        if sub.name in DatasetCatalog.list():
            continue
        parent = get_split(sub.parent)

        def load(sub=sub, parent=parent):
            dicts = DatasetCatalog.get(parent.name)
            keep = subset_indices(dicts, sub.fraction, sub.seed, len(parent.category_names))
            return [dicts[i] for i in keep]

        DatasetCatalog.register(sub.name, load)
        MetadataCatalog.get(sub.name).set(
            thing_classes=list(parent.category_names), evaluator_type="coco"
        )
