"""Diagnostics of SoCo and AlignDet pretraining: does the mechanism work?

- Cross-view retrieval (:func:`box_retrieval`, :func:`retrieval_diagnostic`): for every box
  seen in both views of a batch, is its view-2 embedding the nearest (cosine) of its view-1
  embedding among the view-2 embeddings of all boxes of the batch? The embeddings are the ones
  the pretraining loss compares (:func:`pretrain_embeddings`).
- Class-agnostic AR@100 of a detector's own boxes (:func:`detector_boxes`, :func:`rpn_boxes`,
  :func:`average_recall`, :func:`detector_recall`) against any reference boxes: held-out
  pseudo boxes (selective-search proposals) or ground truth.
- Loss curves of a run (:func:`read_metrics`, :func:`plot_loss_curves`).
- All of them for a pretraining config and checkpoint, against a randomly initialised network of
  the same config on the same batches (:func:`pretrain_diagnostics`;
  ``tools/pretrain_diagnostics.py`` is its command line).
"""

import contextlib
import copy
import io
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, BoxMode, Instances
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from d2ext.utils.d2_compat import evaluate_box_proposals
from d2ext.utils.io import atomic_write

__all__ = [
    "AR_DEFINITION",
    "NORM_STATS",
    "RETRIEVAL_DEFINITION",
    "annotation_boxes",
    "cache_box_convention",
    "average_recall",
    "box_retrieval",
    "combine_retrieval",
    "detector_boxes",
    "detector_recall",
    "diagnostics_table",
    "json_safe",
    "map_batches",
    "plot_loss_curves",
    "pretrain_diagnostics",
    "pretrain_embeddings",
    "proposal_reference",
    "read_metrics",
    "retrieval_diagnostic",
    "rpn_boxes",
]

logger = logging.getLogger(__name__)

NORM_STATS = ("batch", "running")

RETRIEVAL_DEFINITION = (
    "Per batch, each box seen in both views gets one embedding per view: the mean of the "
    "L2-normalised embeddings the loss compares for it (SoCo: the online network's predictor "
    "output on the V1 list of a pair vs the target network's projector output on the partner "
    "list, boxes with a level only, grouped by (image, proposal id); AlignDet: the online "
    "detector's projector embeddings of the samples assigned to the box on view 1 vs the "
    "momentum detector's on view 2, the samples of its InfoNCE), re-normalised. A box is "
    "retrieved when the cosine similarity of its view-1 embedding with its own view-2 embedding "
    "is strictly larger than with every other box's view-2 embedding in the batch (a tie is a "
    "miss); auc: the share of (box, other box) pairs of a batch where the other box's view-2 "
    "embedding is strictly less similar than the box's own (0.5 at chance). top1 = hits / "
    "boxes over all batches; chance = sum over batches of n_b * (1 / n_b) / "
    "sum n_b = batches / boxes, the expected top1 of a uniform random pick. Models run without "
    "gradient or EMA step; norm_stats 'batch': the batch norms that train (SoCo's backbone, "
    "head, projector and predictor) normalise with the batch's statistics as in the loss, "
    "running statistics untouched; 'running': plain eval mode."
)
AR_DEFINITION = (
    "Class-agnostic recall of the detector's top-100 boxes by score per image, with detectron2's "
    "COCOEvaluator box-proposal recall (detectron2.evaluation.coco_evaluation."
    "_evaluate_box_proposals: greedy one-to-one assignment by largest IoU, area 'all'), at IoU "
    "0.50:0.05:0.95, averaged over the 10 thresholds (AR@100); an image without boxes counts "
    "its reference boxes as missed. 'detector': the detector's inference output with the score "
    "threshold at 0 (AlignDet keeps the classifier frozen at its initialisation, so this ranking "
    "comes from the initial classifier and, for FCOS, the trained centerness); 'rpn' (R-CNN): "
    "the RPN's proposals by objectness, which pretraining trains."
)


# ------------------------------------------------------------------------------- retrieval


def _box_means(emb: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique ids >= 0 [U], L2-normalised mean of the L2-normalised embeddings per id [U, D])."""
    keep = ids >= 0
    emb, ids = F.normalize(emb[keep].float(), dim=1), ids[keep]
    uniq, inverse = torch.unique(ids, return_inverse=True)
    sums = emb.new_zeros(len(uniq), emb.shape[1]).index_add_(0, inverse, emb)
    return uniq, F.normalize(sums, dim=1)


def box_retrieval(
    view1: torch.Tensor, ids1: torch.Tensor, view2: torch.Tensor, ids2: torch.Tensor
) -> dict:
    """Top-1 cross-view retrieval among the boxes of one batch (:data:`RETRIEVAL_DEFINITION`).

    Args:
        view1: [M1, D] embeddings of view 1 (several rows may belong to one box).
        ids1: [M1] box identity of each row, unique within the batch; rows with id < 0 are
            ignored.
        view2: [M2, D] embeddings of view 2.
        ids2: [M2] box identities of view 2, in the same id space as ``ids1``.

    Returns:
        dict: ``hits`` (int), ``num_boxes`` (n, the boxes with rows in both views), ``top1``
        (hits / n), ``chance`` (1 / n), ``pos_cos`` (mean cosine of a box's two embeddings) and
        ``neg_cos`` (mean cosine of a box's view-1 embedding with the other boxes' view-2
        embeddings), ``auc`` (the share of (box, other box) pairs where the other box's view-2
        embedding is strictly less similar than the box's own: 0.5 at chance, 1 when every box
        is found); NaN where undefined (n = 0; ``neg_cos`` and ``auc`` at n = 1).
    """
    if view1.dim() != 2 or view2.dim() != 2 or view1.shape[1] != view2.shape[1]:
        raise ValueError(f"embeddings must be [M, D] of one width: {view1.shape}, {view2.shape}")
    if ids1.shape != view1.shape[:1] or ids2.shape != view2.shape[:1]:
        raise ValueError("one id per embedding row is needed")
    u1, e1 = _box_means(view1, ids1.to(view1.device))
    u2, e2 = _box_means(view2, ids2.to(view2.device))
    common = u1[torch.isin(u1, u2)]
    n = len(common)
    if n == 0:
        undefined = dict.fromkeys(("top1", "chance", "pos_cos", "neg_cos", "auc"), math.nan)
        return {"hits": 0, "num_boxes": 0, **undefined}
    q = e1[torch.searchsorted(u1, common)]
    k = e2[torch.searchsorted(u2, common)].to(q.device)
    sim = q @ k.T  # [n, n], row i's own box at column i
    own = sim.diagonal().clone()
    others = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=sim.device), -math.inf)
    hits = int((own > others.max(dim=1).values).sum()) if n > 1 else 1
    neg = float((sim.sum() - own.sum()) / (n * n - n)) if n > 1 else math.nan
    below = (others < own[:, None]).sum()  # the diagonal is -inf: counted, taken off below
    auc = float((below - n) / (n * n - n)) if n > 1 else math.nan
    return {
        "hits": hits,
        "num_boxes": n,
        "top1": hits / n,
        "chance": 1.0 / n,
        "pos_cos": float(own.mean()),
        "neg_cos": neg,
        "auc": auc,
    }


def combine_retrieval(results: Iterable[dict]) -> dict:
    """Pools the :func:`box_retrieval` results of several batches.

    Returns:
        dict: ``hits``, ``num_boxes``, ``num_batches`` (batches with a box), ``top1`` = hits /
        boxes, ``chance`` = batches / boxes (the expected top1 of a uniform random pick in each
        batch), ``ratio`` = top1 / chance, ``pos_cos`` (mean over boxes), ``neg_cos`` and
        ``auc`` (means over the batches' (box, other box) pairs); NaN where no box (pair) was
        seen.
    """
    results = [r for r in results if r["num_boxes"] > 0]
    hits = sum(r["hits"] for r in results)
    n = sum(r["num_boxes"] for r in results)
    top1 = hits / n if n else math.nan
    chance = len(results) / n if n else math.nan
    pairs = [(r["neg_cos"], r["num_boxes"] * (r["num_boxes"] - 1)) for r in results]
    n_pairs = sum(c for _, c in pairs)
    return {
        "hits": hits,
        "num_boxes": n,
        "num_batches": len(results),
        "top1": top1,
        "chance": chance,
        "ratio": top1 / chance if n else math.nan,
        "pos_cos": sum(r["pos_cos"] * r["num_boxes"] for r in results) / n if n else math.nan,
        "neg_cos": sum(v * c for v, c in pairs if c) / n_pairs if n_pairs else math.nan,
        "auc": sum(r["auc"] * c for r, (_, c) in zip(results, pairs) if c) / n_pairs
        if n_pairs
        else math.nan,
    }


def _is_soco(model: nn.Module) -> bool:
    from .soco import SoCo

    return isinstance(model, SoCo)


def _is_aligndet(model: nn.Module) -> bool:
    from .aligndet import AlignDet

    return isinstance(model, AlignDet)


@contextlib.contextmanager
def _eval_mode(model: nn.Module, batch_stats: bool = False):
    """Eval mode without gradient; the model's mode is restored after. With ``batch_stats``,
    the batch norms that train in training mode (``model.train()`` decides, so frozen ones
    stay frozen) normalise with the batch's statistics, as in the training loss, with momentum
    0 so their running statistics do not change."""
    was_training = model.training
    switched = []
    if batch_stats:
        model.train()
        switched = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]
    model.eval()
    saved = []
    for m in switched:
        tracked = None if m.num_batches_tracked is None else m.num_batches_tracked.clone()
        saved.append((m, m.momentum, tracked))
        m.train()
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        model.train(was_training)


def pretrain_embeddings(
    model: nn.Module, batched_inputs: list[dict], norm_stats: str = "batch"
) -> dict[str, tuple]:
    """The embeddings the pretraining loss compares, for one batch of the model's own mapper,
    computed in eval mode without gradient and without the EMA step (the model's mode is
    restored).

    Args:
        model: a :class:`~d2ext.projects.soco.SoCo` or :class:`~d2ext.projects.aligndet.AlignDet`.
        batched_inputs: the pretraining mapper's dicts.
        norm_stats: "batch": the batch norms that train in training mode normalise with the
            batch's statistics, as in the loss (their running statistics are left unchanged);
            "running": every batch norm uses its running statistics (plain eval mode).

    Returns:
        dict[str, tuple]: per view pair, ``(view1 [M1, D], ids1 [M1], view2 [M2, D], ids2
        [M2])`` with box identities unique in the batch (-1: not a box of the loss). SoCo: one
        entry per pair of ``model.view_pairs`` whose first list is a V1 list (``"v1_v2"``,
        ``"v1_v3"``): the online predictor output of that list and the target projector output of
        the partner list, ids ``image * B + proposal id`` where the box has a level. AlignDet:
        ``"v1_v2"``: the online detector's ``queries`` on view 1 and the momentum detector's
        ``keys`` on view 2 with their instance ids (-1 for background samples).

    Raises:
        TypeError: for another model.
        ValueError: an unknown ``norm_stats``.
    """
    if norm_stats not in NORM_STATS:
        raise ValueError(f"norm_stats must be one of {NORM_STATS}, got {norm_stats!r}")
    batch_stats = norm_stats == "batch"
    if _is_soco(model):
        with _eval_mode(model, batch_stats):
            out = model(batched_inputs)
        n_ids = 1 + max(
            (int(i.max()) for d in batched_inputs for i in d["ids"] if len(i)), default=0
        )
        result = {}
        for a, b in model.view_pairs:
            va, vb = model.box_list_views[a], model.box_list_views[b]
            if va != 0:
                continue
            name = f"v{va + 1}_v{vb + 1}"
            suffix, k = "", 1
            while name + suffix in result:
                k += 1
                suffix = f"_{k}"
            keys = []
            for lst in (a, b):
                img = torch.cat(
                    [
                        torch.full((len(d["ids"][lst]),), i, dtype=torch.long)
                        for i, d in enumerate(batched_inputs)
                    ]
                ).to(out["ids"][lst].device)
                key = img * n_ids + out["ids"][lst].long()
                keys.append(torch.where(out["valid"][lst], key, torch.full_like(key, -1)))
            result[name + suffix] = (out["online"][a], keys[0], out["target"][b], keys[1])
        return result
    if _is_aligndet(model):
        from detectron2.utils.events import EventStorage

        # R-CNN's RoI sampling logs to an event storage: a throwaway one
        with _eval_mode(model, batch_stats), EventStorage():
            out = model(batched_inputs)
        return {"v1_v2": (out["queries"], out["query_ids"], out["keys"], out["key_ids"])}
    raise TypeError(f"no pretraining embeddings known for {type(model).__name__}")


@contextlib.contextmanager
def _seeded(seed: int):
    """Python's, numpy's and torch's generators seeded with ``seed`` inside, restored after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def retrieval_diagnostic(
    model: nn.Module, batches: Sequence[list[dict]], seed: int = 0, norm_stats: str = "batch"
) -> dict:
    """:func:`box_retrieval` over batches of the pretraining mapper, pooled by
    :func:`combine_retrieval`.

    Args:
        model: SoCo or AlignDet.
        batches: lists of mapper outputs (e.g. from :func:`map_batches`); the same batches for
            every model compared.
        seed: seeds torch / numpy / random for each batch (AlignDet's sample draws); the
            generators' states are restored after.
        norm_stats: "batch" or "running" (:func:`pretrain_embeddings`).

    Returns:
        dict[str, dict]: per view pair of :func:`pretrain_embeddings`, the pooled result.
    """
    per_pair: dict[str, list[dict]] = {}
    for i, batch in enumerate(batches):
        with _seeded(seed + i):
            embeddings = pretrain_embeddings(model, batch, norm_stats)
        for name, (q, qi, k, ki) in embeddings.items():
            per_pair.setdefault(name, []).append(box_retrieval(q, qi, k, ki))
    return {name: combine_retrieval(rs) for name, rs in per_pair.items()}


def map_batches(
    mapper: Callable[[dict], dict | None],
    dataset_dicts: Sequence[dict],
    batch_size: int,
    seed: int = 0,
) -> list[list[dict]]:
    """Maps ``dataset_dicts`` in order with the pretraining ``mapper`` (torch, numpy and random
    seeded with ``seed``, so a rerun gives the same views; their states are restored after) and
    groups the outputs into batches of ``batch_size`` (the last may be smaller); images the
    mapper skips (None) are left out."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with _seeded(seed):
        mapped = [m for m in (mapper(dict(d)) for d in dataset_dicts) if m is not None]
    return [mapped[i : i + batch_size] for i in range(0, len(mapped), batch_size)]


# ------------------------------------------------------------------------------- recall


def _coco_api(gt_boxes: Sequence[torch.Tensor]):
    from pycocotools.coco import COCO

    anns = []
    for img, boxes in enumerate(gt_boxes):
        for b in torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4).tolist():
            xywh = BoxMode.convert(b, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                    "category_id": 1,
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in range(len(gt_boxes))],
        "annotations": anns,
        "categories": [{"id": 1, "name": "object"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints
        coco.createIndex()
    return coco


def average_recall(
    boxes: Sequence[torch.Tensor],
    scores: Sequence[torch.Tensor],
    gt_boxes: Sequence[torch.Tensor],
    limit: int = 100,
) -> dict:
    """Class-agnostic AR@``limit`` (:data:`AR_DEFINITION`) with detectron2's box-proposal recall.

    Args:
        boxes: per image, [N, 4] XYXY boxes (any order).
        scores: per image, [N] scores; the ``limit`` highest count.
        gt_boxes: per image, [M, 4] XYXY reference boxes.
        limit: boxes per image.

    Returns:
        dict: ``ar`` (mean recall over IoU 0.50:0.05:0.95), ``recalls`` per threshold,
        ``thresholds``, ``num_gt`` (reference boxes), ``limit``.
    """
    if not len(boxes) == len(scores) == len(gt_boxes):
        raise ValueError(f"{len(boxes)} box lists, {len(scores)} score lists, {len(gt_boxes)} gts")
    predictions = []
    for img, (b, s) in enumerate(zip(boxes, scores)):
        b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4).cpu()
        s = torch.as_tensor(s, dtype=torch.float32).reshape(-1).cpu()
        if len(b) != len(s):
            raise ValueError(f"image {img}: {len(b)} boxes but {len(s)} scores")
        if len(b) == 0:  # detectron2 skips an image without boxes, gts included: one empty box
            b, s = torch.zeros(1, 4), torch.zeros(1)
        inst = Instances((1, 1))
        inst.proposal_boxes = Boxes(b)
        inst.objectness_logits = s
        predictions.append({"image_id": img, "proposals": inst})
    num_gt = sum(len(torch.as_tensor(g).reshape(-1, 4)) for g in gt_boxes)
    if num_gt == 0:
        raise ValueError("no reference boxes: recall is undefined")
    res = evaluate_box_proposals(predictions, _coco_api(gt_boxes), limit=limit)
    return {
        "ar": float(res["ar"]),
        "recalls": [float(r) for r in res["recalls"]],
        "thresholds": [round(float(t), 2) for t in res["thresholds"]],
        "num_gt": num_gt,
        "limit": limit,
    }


# attributes holding a detector's test-time score threshold / detections per image
_THRESHOLD_ATTRS = (
    ("", "test_score_thresh", "max_detections_per_image"),  # RetinaNet, FCOS
    ("roi_heads.box_predictor", "test_score_thresh", "test_topk_per_image"),  # R-CNN
    ("", None, "num_detections"),  # d2ext's DeformableDETR
)


@contextlib.contextmanager
def _no_score_threshold(detector: nn.Module, top_k: int):
    saved = []
    try:
        for owner_name, thresh, topk in _THRESHOLD_ATTRS:
            if not _has(detector, owner_name):
                continue
            owner = detector.get_submodule(owner_name)
            for attr, value in ((thresh, 0.0), (topk, top_k)):
                if (
                    attr
                    and hasattr(owner, attr)
                    and not isinstance(getattr(owner, attr), nn.Module)
                ):
                    saved.append((owner, attr, getattr(owner, attr)))
                    setattr(owner, attr, value)
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def detector_boxes(
    detector: nn.Module, batched_inputs: list[dict], top_k: int = 100
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The detector's own inference output (eval mode, no gradient; mode restored), with its
    test score threshold set to 0 and its detections per image to ``top_k`` while it runs.

    Args:
        detector: a detectron2 ``GeneralizedRCNN``, ``RetinaNet``, ``FCOS`` or d2ext's
            ``DeformableDETR`` (AlignDet's subclasses included; for an ``AlignDet`` pass
            ``model.online``).
        batched_inputs: detectron2 inference dicts (``image``, ``height``, ``width``).
        top_k: boxes kept per image, by score.

    Returns:
        list[tuple[Tensor, Tensor]]: per image, boxes [<= top_k, 4] (XYXY in the input dict's
        height x width) and their scores, best first, on the CPU.
    """
    with _no_score_threshold(detector, top_k), _eval_mode(detector):
        outputs = detector(batched_inputs)
    result = []
    for out in outputs:
        inst = out["instances"].to("cpu")
        order = inst.scores.argsort(descending=True)[:top_k]
        result.append((inst.pred_boxes.tensor[order], inst.scores[order]))
    return result


def rpn_boxes(
    detector: nn.Module, batched_inputs: list[dict], top_k: int = 100
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """An R-CNN's RPN proposals (eval mode, no gradient; mode restored), the ``top_k`` by
    objectness per image, rescaled to each input dict's height x width as detectron2's
    ``detector_postprocess`` does.

    Returns:
        list[tuple[Tensor, Tensor]]: per image, boxes [<= top_k, 4] and objectness logits.
    """
    from detectron2.modeling.postprocessing import detector_postprocess

    if not _has(detector, "proposal_generator"):
        raise TypeError(f"{type(detector).__name__} has no proposal_generator (RPN)")
    with _eval_mode(detector):
        images = detector.preprocess_image(batched_inputs)
        features = detector.backbone(images.tensor)
        proposals, _ = detector.proposal_generator(images, features, None)
    result = []
    for props, d, size in zip(proposals, batched_inputs, images.image_sizes):
        inst = Instances(size)
        inst.pred_boxes = props.proposal_boxes
        inst.scores = props.objectness_logits
        h, w = d.get("height", size[0]), d.get("width", size[1])
        inst = detector_postprocess(inst, h, w).to("cpu")
        order = inst.scores.argsort(descending=True)[:top_k]
        result.append((inst.pred_boxes.tensor[order], inst.scores[order]))
    return result


def detector_recall(
    detector: nn.Module,
    dataset_dicts: Sequence[dict],
    reference: dict[str, Callable[[dict, int, int], np.ndarray | torch.Tensor]],
    *,
    short_edge: int,
    max_size: int,
    image_format: str = "BGR",
    top_k: int = 100,
    batch_size: int = 4,
    with_rpn: bool | None = None,
) -> dict:
    """AR@``top_k`` (:func:`average_recall`) of a detector's own boxes on images resized to
    ``short_edge`` (long side at most ``max_size``), against one or more reference box sets.

    Args:
        detector: as in :func:`detector_boxes`.
        dataset_dicts: detectron2 dataset dicts (``file_name``, ``height``, ``width``).
        reference: name -> function ``(dataset_dict, height, width) -> [M, 4]`` XYXY reference
            boxes of the image in original pixels (e.g. held-out proposals, or ground truth).
        short_edge, max_size: the test resize.
        image_format: the detector's input format.
        top_k: boxes per image.
        batch_size: images per forward.
        with_rpn: also score an R-CNN's RPN proposals (:func:`rpn_boxes`); None: when the
            detector has one.

    Returns:
        dict: ``{reference name: {"detector": average_recall(...), ["rpn": ...]}}``.
    """
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T

    if with_rpn is None:
        with_rpn = _has(detector, "proposal_generator")
    resize = T.ResizeShortestEdge(short_edge, max_size)
    sources = {"detector": detector_boxes} | ({"rpn": rpn_boxes} if with_rpn else {})
    found: dict[str, list] = {s: [] for s in sources}
    refs: dict[str, list] = {name: [] for name in reference}
    for start in range(0, len(dataset_dicts), batch_size):
        inputs = []
        for d in dataset_dicts[start : start + batch_size]:
            image = utils.read_image(d["file_name"], format=image_format)
            h, w = image.shape[:2]
            resized = resize.get_transform(image).apply_image(image)
            chw = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            inputs.append({"image": chw, "height": h, "width": w})
            for name, fn in reference.items():
                refs[name].append(torch.as_tensor(np.asarray(fn(d, h, w), np.float32)))
        for s, fn in sources.items():
            found[s].extend(fn(detector, inputs, top_k))
    return {
        name: {
            s: average_recall([b for b, _ in found[s]], [c for _, c in found[s]], gts, top_k)
            for s in sources
        }
        for name, gts in refs.items()
    }


def annotation_boxes(dataset_dict: dict, height: int, width: int) -> np.ndarray:
    """The non-crowd annotation boxes of a detectron2 dataset dict, as [M, 4] XYXY (any
    class): the class-agnostic ground truth."""
    boxes = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in dataset_dict.get("annotations", [])
        if not a.get("iscrowd", 0)
    ]
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def cache_box_convention(cache_dir: str) -> bool:
    """Whether a proposal cache holds inclusive-pixel boxes, as its ``settings.json`` records
    (:func:`d2ext.proposals.read_box_convention`: continuous for a ground-truth cache,
    :func:`d2ext.data.datasets.demo.write_ground_truth_proposals`; inclusive for selective
    search).

    Returns:
        bool: True for inclusive-pixel XYXY boxes.
    """
    from d2ext.proposals import read_box_convention

    return read_box_convention(cache_dir) == "inclusive"


def proposal_reference(
    cache_dir: str, inclusive: bool | None = None
) -> Callable[[dict, int, int], np.ndarray]:
    """Reference boxes read from a proposal cache keyed by image id, as continuous boxes
    (:class:`d2ext.proposals.DatasetProposals`), clipped to the image, degenerate boxes dropped.

    Args:
        cache_dir: the cache (:class:`d2ext.proposals.DatasetProposals`).
        inclusive: the cache holds inclusive-pixel XYXY boxes, as selective search writes them
            and the pretraining mappers read them (x2 + 1, y2 + 1 give continuous boxes);
            False: continuous XYXY boxes (x2 = x1 + width), e.g. a demo split's ground truth
            written by :func:`d2ext.data.datasets.demo.write_ground_truth_proposals`; None:
            from the cache's settings (:func:`cache_box_convention`).

    Returns:
        a function ``(dataset_dict, height, width) -> [M, 4]`` for :func:`detector_recall`.
    """
    from d2ext.proposals import DatasetProposals

    stored = None if inclusive is None else ("inclusive" if inclusive else "continuous")
    proposals = DatasetProposals(
        cache_dir=cache_dir, key="image_id", convention="continuous", cache_convention=stored
    )

    def boxes(dataset_dict: dict, height: int, width: int) -> np.ndarray:
        b = np.asarray(proposals(dataset_dict), np.float32).reshape(-1, 4)
        b[:, 0::2] = b[:, 0::2].clip(0, width)
        b[:, 1::2] = b[:, 1::2].clip(0, height)
        return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])].astype(np.float32)

    return boxes


# ------------------------------------------------------------------------------- loss curves


def read_metrics(path: str) -> list[dict]:
    """The records of a detectron2 ``metrics.json`` (one json object per line), as the run
    that finished sees them: a line cut by a kill is skipped, and a line whose ``iteration`` is
    not after the previous record's starts over from there (a resumed run logs its iterations
    again; the records of the abandoned run from that iteration on are dropped). Lines without
    ``iteration`` are skipped.

    Returns:
        list[dict]: records in increasing ``iteration``.
    """
    records: list[dict] = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "iteration" not in rec:
                continue
            it = rec["iteration"]
            while records and records[-1]["iteration"] >= it:
                records.pop()
            records.append(rec)
    return records


def plot_loss_curves(
    metrics_path: str, out_path: str, keys: Sequence[str] | None = None, title: str = ""
) -> list[str]:
    """Writes a PNG (matplotlib Agg, atomic) of the loss terms of a run's ``metrics.json``
    (:func:`read_metrics`) against the iteration, one line per term.

    Args:
        metrics_path: the run's ``metrics.json``.
        out_path: the PNG.
        keys: the terms to draw (default: ``total_loss`` and every key starting with ``loss``).
        title: the figure title (default: the run folder's name).

    Returns:
        list[str]: the terms drawn.

    Raises:
        ValueError: no record carries any of the terms.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    if keys is None:
        found = {k for r in records for k in r if k == "total_loss" or k.startswith("loss")}
        keys = sorted(found, key=lambda k: (k != "total_loss", k))
    keys = [k for k in keys if any(k in r for r in records)]
    if not keys:
        raise ValueError(f"{metrics_path}: no loss terms in {len(records)} records")
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for k in keys:
        pts = [(r["iteration"], r[k]) for r in records if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, lw=2 if k == "total_loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title or os.path.basename(os.path.dirname(os.path.abspath(metrics_path))))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out_path, lambda f: fig.savefig(f, format="png", dpi=100))
    return list(keys)


# ------------------------------------------------------------------------------- output


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def json_safe(x):
    """``x`` (dicts, lists, numbers) with every NaN (nothing seen) replaced by None, for a
    strict JSON file."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def diagnostics_table(result: dict) -> str:
    """The result of :func:`pretrain_diagnostics` as a text table: retrieval per arm and view
    pair (top1, chance, top1 / chance, cos+ = pos_cos, cos- = neg_cos, auc, boxes), AR@100 per
    arm, reference and box source, and the loss-curve PNG."""
    lines = [
        f"{result['method']}: {result['num_images']} images of {', '.join(result['datasets'])}"
    ]
    lines.append(
        f"{'retrieval':<27} {'arm':<11} {'top1':>6} {'chance':>7} {'x chance':>8} "
        f"{'cos+':>6} {'cos-':>6} {'auc':>6} boxes"
    )
    for arm, pairs in result["retrieval"].items():
        for pair, r in pairs.items():
            lines.append(
                f"{pair:<27} {arm:<11} {_fmt(r['top1']):>6} {_fmt(r['chance']):>7} "
                f"{_fmt(r['ratio']):>8} {_fmt(r['pos_cos']):>6} {_fmt(r['neg_cos']):>6} "
                f"{_fmt(r['auc']):>6} {r['num_boxes']}"
            )
    for arm, refs in result.get("ar", {}).items():
        for ref, sources in refs.items():
            for source, r in sources.items():
                name = f"AR@100 {ref}/{source}"
                lines.append(f"{name:<27} {arm:<11} {_fmt(r['ar']):>6}  gt {r['num_gt']}")
    if result.get("loss_curves"):
        lines.append(f"loss curves: {result['loss_curves']} ({', '.join(result['loss_terms'])})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- all of it


def _pretrain_names(cfg) -> list[str]:
    names = cfg.dataloader.train.dataset.names
    return [names] if isinstance(names, str) else list(names)


def _dataset_dicts(names: Sequence[str]) -> list[dict]:
    from detectron2.data import DatasetCatalog

    dicts = []
    for name in names:
        if name not in DatasetCatalog.list():
            raise KeyError(f"dataset {name!r} is not registered")
        dicts.extend(DatasetCatalog.get(name))
    return dicts


def _test_resize(mapper) -> tuple[int, int]:
    """(largest short side, max size) of the mapper's first ResizeShortestEdge."""
    from detectron2.data import transforms as T

    augs = getattr(mapper, "augmentations", None)
    for aug in getattr(augs, "augs", augs) or ():
        if isinstance(aug, T.ResizeShortestEdge):
            return int(max(aug.short_edge_length)), int(aug.max_size)
    raise ValueError(f"{type(mapper).__name__} has no ResizeShortestEdge to take a test size from")


def pretrain_diagnostics(
    cfg,
    checkpoint: str | None,
    *,
    datasets: Sequence[str],
    proposals_dir: str | None = None,
    random_control: bool = True,
    control_init: str | None = None,
    gt_datasets: Sequence[str] = ("d2ext_demo_shapes_val",),
    references: dict[str, str | tuple[str, bool]] | None = None,
    num_images: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    norm_stats: str = "batch",
    metrics: str | None = None,
    out_dir: str | None = None,
    device: str = "cpu",
) -> dict:
    """Every diagnostic of a SoCo / AlignDet pretraining run.

    Args:
        cfg: the pretraining LazyConfig (``model``, ``dataloader.train.mapper``,
            ``dataloader.train.total_batch_size``, ``dataloader.train.dataset.names``).
        checkpoint: the pretraining checkpoint (``model_final.pth``; loaded strictly, without
            unpickling code); None: the pretrained arm is skipped.
        datasets: registered dataset names of the held-out unlabeled images.
        proposals_dir: proposal cache of those images (replaces the mapper's
            ``proposals.cache_dir``); None: the config's.
        random_control: also run a randomly initialised model of the same config (seeded with
            ``seed``) on the same batches.
        control_init: a checkpoint loaded (non-strictly) into the random control, e.g.
            AlignDet's starting point with the supervised backbone.
        gt_datasets: labelled dataset names for AR against their ground truth, any class
            (AlignDet; reference ``"gt"``); empty: none.
        references: more reference box sets of the held-out images for AR (AlignDet): name ->
            proposal cache folder (box convention from its settings,
            :func:`cache_box_convention`) or (folder, inclusive) (:func:`proposal_reference`),
            e.g. ``{"gt_heldout": <the held-out split's ground-truth cache>}``.
        num_images: use the first ``num_images`` held-out images (and gt images); None: all.
        batch_size: images per batch (None: the config's ``total_batch_size``).
        seed: seeds the views, the samplers and the random control.
        norm_stats: batch norms in retrieval, "batch" (as the loss) or "running"
            (:func:`pretrain_embeddings`).
        metrics: the run's ``metrics.json`` for the loss curves (None: beside ``checkpoint``).
        out_dir: where ``loss_curves.png`` goes (None: no plot).
        device: where the models run.

    Returns:
        dict: ``method`` ("soco" / "aligndet"), ``retrieval`` {arm: {pair: pooled result}},
        ``ar`` (AlignDet) {arm: {"pseudo" / "gt" / reference name: {"detector" / "rpn": AR}}}
        ("pseudo": the mapper's pseudo boxes of the held-out images), ``loss_curves``
        (PNG path or None) and ``loss_terms``, the inputs (``datasets``, ``num_images``,
        ``images_seen_in_pretraining``, ...) and the definitions.
    """
    from detectron2.config import instantiate

    from d2ext.checkpoint import load_checkpoint

    cfg = copy.deepcopy(cfg)  # the caller's config is left as it was
    # the images first: an unknown dataset is reported before the proposal cache is opened
    dicts = _dataset_dicts(datasets)[:num_images]
    if not dicts:
        raise ValueError(f"no images in {list(datasets)}")
    mapper_cfg = cfg.dataloader.train.mapper
    if proposals_dir is not None:
        mapper_cfg.proposals.cache_dir = proposals_dir
    mapper = instantiate(mapper_cfg)
    batch_size = batch_size or int(cfg.dataloader.train.total_batch_size)
    seen_names = _pretrain_names(cfg)
    try:
        seen = {d["file_name"] for d in _dataset_dicts(seen_names)}
        overlap = sum(d["file_name"] in seen for d in dicts)
    except KeyError:  # the pretraining's images are not registered here
        overlap = None
    if overlap:
        logger.warning(f"{overlap} of the {len(dicts)} images were seen in pretraining")
    batches = map_batches(mapper, dicts, batch_size, seed)

    arms: dict[str, nn.Module] = {}
    if checkpoint is not None:
        with _seeded(seed):
            model = instantiate(cfg.model)
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state.get("model", state), strict=True)
        arms["pretrained"] = model.to(device)
    if random_control:
        with _seeded(seed):
            model = instantiate(cfg.model)
        if control_init:
            state = load_checkpoint(control_init)
            model.load_state_dict(state.get("model", state), strict=False)
        arms["random"] = model.to(device)
    if not arms:
        raise ValueError("nothing to measure: no checkpoint and no random control")
    method = "soco" if _is_soco(next(iter(arms.values()))) else "aligndet"
    result = {
        "method": method,
        "datasets": list(datasets),
        "num_images": len(dicts),
        "num_batches": len(batches),
        "batch_size": batch_size,
        "images_seen_in_pretraining": overlap,
        "pretrain_datasets": seen_names,
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "control_init": os.path.abspath(control_init) if random_control and control_init else None,
        "seed": seed,
        "retrieval_definition": RETRIEVAL_DEFINITION,
        "norm_stats": norm_stats,
        "retrieval": {
            arm: retrieval_diagnostic(m, batches, seed, norm_stats) for arm, m in arms.items()
        },
    }
    if method == "aligndet":
        short_edge, max_size = _test_resize(mapper)
        gt_dicts = _dataset_dicts(gt_datasets)[:num_images] if gt_datasets else []
        result["ar_definition"] = AR_DEFINITION
        result["ar_test_size"] = [short_edge, max_size]
        result["gt_datasets"] = list(gt_datasets)
        references = {
            name: (ref, None) if isinstance(ref, str) else tuple(ref)
            for name, ref in (references or {}).items()
        }
        references = {
            name: (d, cache_box_convention(d) if i is None else bool(i))
            for name, (d, i) in references.items()
        }
        result["references"] = {n: {"cache": d, "inclusive": i} for n, (d, i) in references.items()}
        result["ar"] = {}
        for arm, m in arms.items():
            kw = {"short_edge": short_edge, "max_size": max_size}
            kw["image_format"] = mapper.image_format
            refs = {"pseudo": mapper.pseudo_boxes}
            refs |= {name: proposal_reference(d, i) for name, (d, i) in references.items()}
            ar = detector_recall(m.online, dicts, refs, **kw)
            if gt_dicts:
                ar |= detector_recall(m.online, gt_dicts, {"gt": annotation_boxes}, **kw)
            result["ar"][arm] = ar
    if metrics is None and checkpoint is not None:
        metrics = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "metrics.json")
    result["metrics"] = metrics
    result["loss_curves"], result["loss_terms"] = None, []
    if out_dir is not None and metrics is not None and os.path.isfile(metrics):
        png = os.path.join(out_dir, "loss_curves.png")
        result["loss_terms"] = plot_loss_curves(metrics, png)
        result["loss_curves"] = png
    return result
