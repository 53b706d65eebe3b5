"""The Co-DETR paper's encoder analysis (Sec. 3.4 and Fig. 2/3 of arXiv 2211.12860): the
discriminability score of the encoder's output and the IoF-IoB curve.

The authors released no code for it. This module's reading of the paper's definition, for one
image with encoder output levels F_1..F_J (F_j: C x H_j x W_j, the valid part of the image):

- ``S_j = ||F_j||_2`` over the channels at every location;
- each ``S_j`` normalised to [0, 1] over that image and level: ``(S_j - min S_j) /
  (max S_j - min S_j)`` (``normalization="minmax"``; ``"max"`` divides by the maximum only);
- each resized bilinearly to a common grid (the finest level's), and averaged over levels:
  ``S = 1/J sum_j resize(S_j)``.

The IoF-IoB curve thresholds S: for each t, IoF(t) = the fraction of foreground cells (cell
centre inside a ground-truth box) with S >= t, IoB(t) = the fraction of background cells with
S >= t, both summed over every image of the dataset. A higher curve (more foreground above a
threshold for the same background) is a more discriminative encoder; the area under IoF over
IoB summarises it (0.5: no better than chance).

The encoder output is read through the model's own ``preprocess_image`` and ``encode`` (the
``EncoderOutput`` memory that the decoder and Co-DETR's auxiliary heads consume), so any
``DeformableDETR`` subclass works: Co-Deformable-DETR, DINO, Co-DINO.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from d2ext.utils.io import atomic_write_bytes

__all__ = [
    "IoFIoBCurve",
    "analyze_discriminability",
    "discriminability_score",
    "encoder_norm_maps",
    "foreground_mask",
    "model_discriminability",
    "plot_iof_iob",
    "plot_score_map",
]

logger = logging.getLogger(__name__)

_NORMALIZATIONS = ("minmax", "max")


def encoder_norm_maps(
    memory: torch.Tensor,
    spatial_shapes: Sequence[Sequence[int]],
    image_sizes: Sequence[tuple[int, int]],
    padded_size: tuple[int, int],
) -> list[list[torch.Tensor]]:
    """The per-location L2 norm of every encoder level, cut to each image's valid part.

    Args:
        memory: [N, S, C] the encoder output, the levels' H_l x W_l locations one after the
            other (``EncoderOutput.memory``).
        spatial_shapes: (H_l, W_l) per level.
        image_sizes: (h, w) of each image in the padded batch.
        padded_size: (H, W) of the padded batch. Level l keeps its first ceil(h H_l / H) rows
            and ceil(w W_l / W) columns: the locations detectron2-style nearest resizing of the
            image's padding mask marks valid.

    Returns:
        list[list[Tensor]]: per image, per level, the [h_l, w_l] norms.
    """
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    if memory.dim() != 3 or memory.shape[1] != sum(h * w for h, w in shapes):
        raise ValueError(
            f"memory {tuple(memory.shape)} does not hold the levels {shapes} ([N, S, C])"
        )
    if len(image_sizes) != memory.shape[0]:
        raise ValueError(f"{len(image_sizes)} image sizes for a batch of {memory.shape[0]}")
    norms = memory.float().norm(dim=-1).split([h * w for h, w in shapes], dim=1)
    out = []
    for i, (ih, iw) in enumerate(image_sizes):
        per_level = []
        for n, (h, w) in zip(norms, shapes):
            vh = max(1, min(h, math.ceil(ih * h / padded_size[0])))
            vw = max(1, min(w, math.ceil(iw * w / padded_size[1])))
            per_level.append(n[i].view(h, w)[:vh, :vw])
        out.append(per_level)
    return out


def discriminability_score(
    norm_maps: Sequence[torch.Tensor],
    *,
    out_size: tuple[int, int] | None = None,
    normalization: str = "minmax",
) -> torch.Tensor:
    """The discriminability score map of one image (see the module docstring).

    Args:
        norm_maps: per level, the [h_l, w_l] L2 norms (:func:`encoder_norm_maps`).
        out_size: the common grid (default: the largest level's size).
        normalization: "minmax" ((S - min) / (max - min); a constant level gives 0) or "max"
            (S / max; an all-zero level gives 0).

    Returns:
        Tensor: [H, W] float32 scores in [0, 1].
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if not norm_maps:
        raise ValueError("need at least one level")
    if out_size is None:
        out_size = tuple(max(norm_maps, key=lambda m: m.numel()).shape)
    total = torch.zeros(out_size, dtype=torch.float32, device=norm_maps[0].device)
    for s in norm_maps:
        s = s.float()
        if normalization == "minmax":
            lo, span = s.min(), s.max() - s.min()
            s = (s - lo) / span if span > 0 else torch.zeros_like(s)
        else:
            top = s.max()
            s = s / top if top > 0 else torch.zeros_like(s)
        if tuple(s.shape) != tuple(out_size):
            s = F.interpolate(s[None, None], size=out_size, mode="bilinear", align_corners=False)
            s = s[0, 0]
        total += s
    return (total / len(norm_maps)).clamp_(0.0, 1.0)


def foreground_mask(
    boxes: torch.Tensor, image_size: tuple[int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """Cells of an ``out_size`` grid laid over the image whose centre lies inside a box.

    Args:
        boxes: [K, 4] boxes (x1, y1, x2, y2) in the image's pixels.
        image_size: (h, w) of the image the grid covers.
        out_size: (H, W) of the grid.

    Returns:
        Tensor: [H, W] bool, True in the foreground (x1 <= x < x2 and y1 <= y < y2).
    """
    gh, gw = out_size
    ys = (torch.arange(gh, dtype=torch.float32) + 0.5) * (image_size[0] / gh)
    xs = (torch.arange(gw, dtype=torch.float32) + 0.5) * (image_size[1] / gw)
    mask = torch.zeros(gh, gw, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.detach().float().cpu().tolist():
        rows = (ys >= y1) & (ys < y2)
        cols = (xs >= x1) & (xs < x2)
        mask |= rows[:, None] & cols[None, :]
    return mask


class IoFIoBCurve:
    """Accumulates IoF(t) and IoB(t) over images at the thresholds t_k = k / (T - 1).

    Counts are kept per threshold bin (exact: a score s counts for every t_k <= s), so the
    state is small, exact and resumable (:meth:`state_dict` / :meth:`load_state_dict`).

    Args:
        num_thresholds: T, at least 2.
    """

    def __init__(self, num_thresholds: int = 101):
        if num_thresholds < 2:
            raise ValueError(f"num_thresholds must be >= 2, got {num_thresholds}")
        self.thresholds = np.linspace(0.0, 1.0, num_thresholds)
        self._edges = np.append(self.thresholds, np.inf)
        self.fg_hist = np.zeros(num_thresholds, dtype=np.int64)
        self.bg_hist = np.zeros(num_thresholds, dtype=np.int64)
        self.fg_sum = 0.0
        self.bg_sum = 0.0
        self.num_images = 0

    def update(self, score: torch.Tensor, foreground: torch.Tensor) -> None:
        """Adds one image.

        Args:
            score: [H, W] scores in [0, 1].
            foreground: [H, W] bool foreground cells.
        """
        if score.shape != foreground.shape:
            raise ValueError(f"score {tuple(score.shape)} and mask {tuple(foreground.shape)}")
        s = score.detach().float().cpu().numpy().astype(np.float64)
        fg = foreground.cpu().numpy().astype(bool)
        self.fg_hist += np.histogram(s[fg], bins=self._edges)[0]
        self.bg_hist += np.histogram(s[~fg], bins=self._edges)[0]
        self.fg_sum += float(s[fg].sum())
        self.bg_sum += float(s[~fg].sum())
        self.num_images += 1

    def result(self) -> dict:
        """
        Returns:
            dict: ``thresholds``, ``iof``, ``iob`` (lists, NaN-free: an empty class gives 0),
            ``auc`` (area under IoF over IoB, from (0, 0) to (1, 1)), ``mean_fg_score``,
            ``mean_bg_score``, ``fg_cells``, ``bg_cells``, ``num_images``.
        """
        fg_total, bg_total = int(self.fg_hist.sum()), int(self.bg_hist.sum())
        fg_ge = np.cumsum(self.fg_hist[::-1])[::-1]  # cells with score >= t_k
        bg_ge = np.cumsum(self.bg_hist[::-1])[::-1]
        iof = fg_ge / fg_total if fg_total else np.zeros_like(self.thresholds)
        iob = bg_ge / bg_total if bg_total else np.zeros_like(self.thresholds)
        x = np.concatenate([[0.0], iob[::-1]])
        y = np.concatenate([[0.0], iof[::-1]])
        auc = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
        return {
            "thresholds": self.thresholds.tolist(),
            "iof": iof.tolist(),
            "iob": iob.tolist(),
            "auc": auc,
            "mean_fg_score": self.fg_sum / fg_total if fg_total else 0.0,
            "mean_bg_score": self.bg_sum / bg_total if bg_total else 0.0,
            "fg_cells": fg_total,
            "bg_cells": bg_total,
            "num_images": self.num_images,
        }

    def state_dict(self) -> dict:
        """
        Returns:
            dict: JSON-serialisable counts.
        """
        return {
            "num_thresholds": len(self.thresholds),
            "fg_hist": self.fg_hist.tolist(),
            "bg_hist": self.bg_hist.tolist(),
            "fg_sum": self.fg_sum,
            "bg_sum": self.bg_sum,
            "num_images": self.num_images,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict`'s counts.

        Args:
            state: a :meth:`state_dict` of a curve with the same number of thresholds.
        """
        if state["num_thresholds"] != len(self.thresholds):
            raise ValueError(
                f"saved state has {state['num_thresholds']} thresholds, this curve "
                f"{len(self.thresholds)}"
            )
        self.fg_hist = np.asarray(state["fg_hist"], dtype=np.int64)
        self.bg_hist = np.asarray(state["bg_hist"], dtype=np.int64)
        self.fg_sum, self.bg_sum = float(state["fg_sum"]), float(state["bg_sum"])
        self.num_images = int(state["num_images"])


@torch.no_grad()
def model_discriminability(
    model: torch.nn.Module, batched_inputs: list[dict], *, normalization: str = "minmax"
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Discriminability score maps of a Deformable-DETR-family model's encoder output.

    Args:
        model: a ``DeformableDETR`` (or subclass: Co-Deformable-DETR, DINO, Co-DINO): its
            ``preprocess_image`` and ``encode`` are called.
        batched_inputs: detectron2's input dicts (``image`` [C, H, W]).
        normalization: see :func:`discriminability_score`.

    Returns:
        tuple[list[Tensor], list[tuple]]: per image the [H, W] score map (on the CPU) and the
        (h, w) input image size it covers.
    """
    for name in ("preprocess_image", "encode"):
        if not callable(getattr(model, name, None)):
            raise TypeError(
                f"{type(model).__name__} has no {name}(): the analysis reads the encoder output "
                "of a DeformableDETR-family model"
            )
    images = model.preprocess_image(batched_inputs)
    enc = model.encode(images)
    if isinstance(enc, tuple):
        enc = enc[0]
    if not hasattr(enc, "memory") or not hasattr(enc, "spatial_shapes"):
        raise TypeError("encode() must return an EncoderOutput (memory, spatial_shapes)")
    maps = encoder_norm_maps(
        enc.memory,
        enc.spatial_shapes.tolist(),
        images.image_sizes,
        tuple(images.tensor.shape[-2:]),
    )
    scores = [discriminability_score(m, normalization=normalization).cpu() for m in maps]
    return scores, [tuple(int(v) for v in s) for s in images.image_sizes]


def plot_iof_iob(curves: dict[str, dict], path: str, *, title: str | None = None) -> None:
    """Writes a PNG (matplotlib Agg, atomic) of IoF over IoB for one or more runs.

    Args:
        curves: label -> a :meth:`IoFIoBCurve.result` (``iof``, ``iob``, ``auc``).
        path: the PNG to write.
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label, r in curves.items():
        ax.plot(r["iob"], r["iof"], marker=".", markersize=3, label=f"{label} (AUC {r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="IoB", ylabel="IoF", title=title or "IoF-IoB")
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_score_map(
    image_rgb: np.ndarray, score: torch.Tensor, boxes: torch.Tensor, path: str
) -> None:
    """Writes a PNG (atomic) of an image beside its discriminability map, boxes drawn on both.

    Args:
        image_rgb: [h, w, 3] uint8 image (the model's input size).
        score: [H, W] scores over that image.
        boxes: [K, 4] ground-truth boxes (x1, y1, x2, y2) in the image's pixels.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    h, w = image_rgb.shape[:2]
    fig = Figure(figsize=(8, 4 * h / max(w, 1) + 0.5), dpi=100)
    for k, (data, kwargs) in enumerate(
        [(image_rgb, {}), (score.numpy(), {"cmap": "jet", "vmin": 0.0, "vmax": 1.0})]
    ):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(data, extent=(0, w, h, 0), **kwargs)
        for x1, y1, x2, y2 in boxes.tolist():
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="w", lw=1))
        ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _write_json(path: str, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1).encode())


def analyze_discriminability(
    model: torch.nn.Module,
    dataset_dicts: Sequence[dict],
    mapper: Callable[[dict], dict | None],
    output_dir: str,
    *,
    label: str = "model",
    num_thresholds: int = 101,
    normalization: str = "minmax",
    num_visualize: int = 4,
    save_every: int = 50,
    input_format: str = "BGR",
    run_info: dict | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict:
    """Scores every image of a dataset and writes the results; resumable.

    Writes (atomically) into ``output_dir``: ``discriminability.json`` (the
    :meth:`IoFIoBCurve.result` plus ``label``, ``normalization`` and ``run_info``),
    ``iof_iob.png`` and ``score_maps/<index>_<image_id>.png`` for the first ``num_visualize``
    images. ``state.json`` holds the counts and how many images are done; a rerun with the
    same settings continues after them (changed settings: an error).

    Args:
        model: the detector (eval mode is set here).
        dataset_dicts: the dataset, in a fixed order.
        mapper: maps a dataset dict to the model's input with ``instances`` (the ground-truth
            boxes in the input's pixels), e.g. a training-mode ``DatasetMapper`` with the
            test augmentations.
        output_dir: the output folder.
        label: the run's name in the JSON and the plot legend.
        num_thresholds, normalization: see :class:`IoFIoBCurve` / :func:`discriminability_score`.
        num_visualize: images drawn as score-map PNGs.
        save_every: images between two saves of ``state.json``.
        input_format: the channel order of ``image`` (for the drawings).
        run_info: extra settings recorded in the JSON and checked on resume (config, weights).
        progress: wraps the image iterator (e.g. a progress bar).

    Returns:
        dict: what ``discriminability.json`` holds.
    """
    os.makedirs(output_dir, exist_ok=True)
    settings = {
        "label": label,
        "num_thresholds": num_thresholds,
        "normalization": normalization,
        "num_images_total": len(dataset_dicts),
        "run_info": run_info or {},
    }
    curve = IoFIoBCurve(num_thresholds)
    state_path = os.path.join(output_dir, "state.json")
    done = 0
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        if state.get("settings") != json.loads(json.dumps(settings)):
            raise ValueError(
                f"{state_path} was written with other settings ({state.get('settings')}); "
                "use another output folder or delete it"
            )
        curve.load_state_dict(state["curve"])
        done = int(state["done"])
        logger.info("resuming after %d of %d images", done, len(dataset_dicts))

    def save_state():
        _write_json(state_path, {"settings": settings, "done": done, "curve": curve.state_dict()})

    model.eval()
    indices = range(done, len(dataset_dicts))
    for index in progress(indices) if progress else indices:
        record = dataset_dicts[index]
        item = mapper(record)
        if item is None:
            raise ValueError(f"the mapper returned None for {record.get('file_name')}")
        [score], [size] = model_discriminability(model, [item], normalization=normalization)
        boxes = item["instances"].gt_boxes.tensor if "instances" in item else torch.zeros(0, 4)
        curve.update(score, foreground_mask(boxes, size, tuple(score.shape)))
        if index < num_visualize:
            image = item["image"].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
            if input_format == "BGR":
                image = image[:, :, ::-1]
            name = f"{index:06d}_{record.get('image_id', index)}.png"
            plot_score_map(image, score, boxes, os.path.join(output_dir, "score_maps", name))
        done = index + 1
        if done % save_every == 0:
            save_state()
    save_state()
    result = {**curve.result(), **settings}
    _write_json(os.path.join(output_dir, "discriminability.json"), result)
    plot_iof_iob({label: result}, os.path.join(output_dir, "iof_iob.png"))
    return result
