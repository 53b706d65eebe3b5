"""d2ext.projects.pretrain_diagnostics and tools/pretrain_diagnostics.py: cross-view retrieval,
class-agnostic AR of a detector's own boxes, loss curves, and the tool end to end."""

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import instantiate

from d2ext.projects.pretrain_diagnostics import (
    average_recall,
    box_retrieval,
    cache_box_convention,
    combine_retrieval,
    detector_boxes,
    diagnostics_table,
    json_safe,
    map_batches,
    plot_loss_curves,
    pretrain_embeddings,
    proposal_reference,
    read_metrics,
    retrieval_diagnostic,
    rpn_boxes,
)

from ..helpers import load_config, load_tool

SOCO = "projects/SoCo/configs/soco_R18_FPN_4conv1fc_demo.py"
ALIGNDET = {
    "faster_rcnn": "projects/AlignDet/configs/aligndet_faster_rcnn_R18_FPN_demo.py",
    "retinanet": "projects/AlignDet/configs/aligndet_retinanet_R18_FPN_demo.py",
    "fcos": "projects/AlignDet/configs/aligndet_fcos_R18_FPN_demo.py",
    "detr": "projects/AlignDet/configs/aligndet_deformable_detr_R18_demo.py",
}


# ------------------------------------------------------------------------------- retrieval


def test_retrieval_of_a_permuted_copy_is_perfect_and_chance_is_one_over_n():
    g = torch.Generator().manual_seed(0)
    n, d = 7, 16
    view1 = torch.randn(n, d, generator=g)
    ids1 = torch.arange(n) * 3 + 5  # any unique identities
    perm = torch.randperm(n, generator=g)
    # view 2: the same boxes in another order, each with a second row (several samples per box)
    view2 = torch.cat([view1[perm] * 2.0, view1[perm] * 0.5])
    ids2 = torch.cat([ids1[perm], ids1[perm]])
    r = box_retrieval(view1, ids1, view2, ids2)
    assert (r["hits"], r["num_boxes"], r["top1"]) == (n, n, 1.0)
    assert r["chance"] == pytest.approx(1.0 / n) and r["pos_cos"] == pytest.approx(1.0)
    assert r["auc"] == 1.0
    unit = F.normalize(view1, dim=1)
    gram = unit @ unit.T
    assert r["neg_cos"] == pytest.approx(float((gram.sum() - gram.trace()) / (n * n - n)))
    # the permutation must be followed: without the ids' permutation most boxes are misses
    wrong = box_retrieval(view1, ids1, view2, torch.cat([ids1, ids1]))
    assert wrong["hits"] < n


def test_retrieval_counts_exactly_the_known_mismatches():
    # 5 boxes at angles 0, 50, 110, 170, 250 degrees in view 1 (no two cosines of a row equal
    # by geometry, so float rounding cannot turn a tie into an order)
    angles = torch.tensor([0.0, 50.0, 110.0, 170.0, 250.0]) * math.pi / 180
    unit = torch.stack([angles.cos(), angles.sin()], 1)
    ids = torch.tensor([10, 11, 12, 13, 14])
    view2 = unit.clone()
    view2[1], view2[2] = unit[2], unit[1]  # boxes 11 and 12 swapped: two misses
    view2[3] = unit[4]  # box 13 equals box 14 in view 2: a tie for 13 and for 14, both misses
    # distractors that must not count: an id only in view 2, and background rows (-1)
    view2 = torch.cat([view2, unit[:1], torch.randn(3, 2)])
    ids2 = torch.cat([ids, torch.tensor([99, -1, -1, -1])])
    r = box_retrieval(unit, ids, view2, ids2)
    assert r["num_boxes"] == 5 and r["hits"] == 1  # only box 10 (box 99 is not a candidate)
    assert r["top1"] == pytest.approx(1 / 5) and r["chance"] == pytest.approx(1 / 5)
    # cosines by angle differences: box i at a[i] in view 1, at b[i] in view 2
    a = [0, 50, 110, 170, 250]
    b = [0, 110, 50, 250, 250]
    cos = [[math.cos(math.radians(x - y)) for y in b] for x in a]
    assert r["pos_cos"] == pytest.approx(sum(cos[i][i] for i in range(5)) / 5, abs=1e-6)
    off = sum(cos[i][j] for i in range(5) for j in range(5) if i != j) / 20
    assert r["neg_cos"] == pytest.approx(off, abs=1e-6)
    # other boxes strictly less similar than the own one (13 and 14 tie in view 2: not below)
    below = sum(cos[i][j] < cos[i][i] - 1e-6 for i in range(5) for j in range(5) if i != j)
    assert r["auc"] == pytest.approx(below / 20)
    assert below == 4 + 2 + 3 + 2 + 3  # per box 10..14, read off the angle table
    # the view-1 rows of one box are averaged: two rows (1, 0.2) and (1, -0.2) mean to (1, 0)
    two_rows = torch.tensor([[1.0, 0.2], [1.0, -0.2], [0.0, 1.0]])
    r = box_retrieval(two_rows, torch.tensor([0, 0, 1]), torch.eye(2), torch.tensor([0, 1]))
    assert (r["hits"], r["num_boxes"]) == (2, 2)
    empty = box_retrieval(unit, ids, unit, ids + 100)
    assert empty["num_boxes"] == 0 and math.isnan(empty["top1"])
    with pytest.raises(ValueError, match="one id per"):
        box_retrieval(unit, ids[:2], unit, ids)


def test_pooled_chance_is_batches_over_boxes():
    nan = math.nan
    keys = ("hits", "num_boxes", "top1", "chance", "pos_cos", "neg_cos", "auc")
    rows = [(2, 2, 1.0, 0.5, 0.9, 0.1, 1.0), (1, 4, 0.25, 0.25, 0.3, 0.2, 0.5)]
    rows.append((0, 0, nan, nan, nan, nan, nan))
    pooled = combine_retrieval([dict(zip(keys, row)) for row in rows])
    assert pooled["hits"] == 3 and pooled["num_boxes"] == 6 and pooled["num_batches"] == 2
    assert pooled["top1"] == pytest.approx(0.5)
    assert pooled["chance"] == pytest.approx(2 / 6)  # = (2 * 1/2 + 4 * 1/4) / 6
    assert pooled["ratio"] == pytest.approx(1.5)
    assert pooled["pos_cos"] == pytest.approx((2 * 0.9 + 4 * 0.3) / 6)
    assert pooled["neg_cos"] == pytest.approx((2 * 0.1 + 12 * 0.2) / 14)  # n (n - 1) pairs
    assert pooled["auc"] == pytest.approx((2 * 1.0 + 12 * 0.5) / 14)


def test_map_batches_is_reproducible_and_leaves_the_generators_alone():
    def mapper(d):
        if d["skip"]:
            return None
        return {"t": torch.rand(1).item(), "n": float(np.random.rand()), "r": random.random()}

    dicts = [{"skip": i == 2} for i in range(5)]

    def seed_all():
        torch.manual_seed(7)
        np.random.seed(7)
        random.seed(7)

    seed_all()
    expected = (torch.rand(1).item(), float(np.random.rand()), random.random())
    seed_all()
    first = map_batches(mapper, dicts, 3, seed=3)
    assert (torch.rand(1).item(), float(np.random.rand()), random.random()) == expected
    assert [len(b) for b in first] == [3, 1]  # the skipped image is left out
    assert map_batches(mapper, dicts, 3, seed=3) == first
    assert map_batches(mapper, dicts, 3, seed=4) != first
    with pytest.raises(ValueError, match="batch_size"):
        map_batches(mapper, dicts, 0)


def _tiny_soco():
    cfg = load_config(SOCO)
    cfg.model.projector_hidden_dim = 64
    cfg.model.out_dim = 32
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _soco_batch():
    """2 images, views 64/64/32, 4 box lists; list 0 has ids (1, 2), list 1 (2, 1, 7): id 7
    has no partner; image 1's second box of list 1 has no level."""
    from d2ext.layers import assign_levels_soco

    g = torch.Generator().manual_seed(0)
    batch = []
    for img in range(2):
        views = [
            torch.randint(0, 255, (3, s, s), generator=g, dtype=torch.uint8) for s in (64, 64, 32)
        ]
        base = torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 8.0, 60.0, 60.0], [0, 0, 20, 20]])
        boxes = [base[:2], base[[1, 0, 2]], base[:2] * 0.9, base[:2] / 2]
        ids = [torch.tensor([1, 2]), torch.tensor([2, 1, 7]), torch.tensor([1, 2])]
        ids.append(torch.tensor([1, 2]))
        levels = [assign_levels_soco(b, inclusive=False) for b in boxes]
        if img == 1:
            levels[1][1] = -1
        batch.append({"views": views, "boxes": boxes, "levels": levels, "ids": ids})
    return batch


def test_soco_embeddings_are_the_online_predictor_and_target_projector_outputs():
    model = _tiny_soco().train()
    batch = _soco_batch()
    emb = pretrain_embeddings(model, batch, norm_stats="running")  # = eval mode's forward
    assert model.training  # mode restored
    assert set(emb) == {"v1_v2", "v1_v3"}
    model.eval()
    with torch.no_grad():
        out = model(batch)
    q, qi, k, ki = emb["v1_v2"]
    torch.testing.assert_close(q, out["online"][0])  # predictor(online(V1 list of (V1, V2)))
    torch.testing.assert_close(k, out["target"][1])  # projector(target(V2 list))
    # identities image * 8 + id (largest id 7); the box without a level is -1
    assert qi.tolist() == [1, 2, 9, 10]
    assert ki.tolist() == [2, 1, 7, 10, -1, 15]
    q3, _, k3, _ = emb["v1_v3"]
    torch.testing.assert_close(q3, out["online"][2])
    torch.testing.assert_close(k3, out["target"][3])
    r = retrieval_diagnostic(model, [batch], norm_stats="running")["v1_v2"]
    assert r["num_boxes"] == 3 and r["chance"] == pytest.approx(1 / 3)  # boxes 1, 2, 10


def test_soco_retrieval_of_identical_views_through_one_branch_is_perfect():
    """A network comparing a view with itself through the same branch finds every box: the
    wiring (ids, images, levels) pairs the right rows."""
    model = _tiny_soco()
    batch = _soco_batch()
    for d in batch:  # V2 = V1, same boxes and ids in lists 0 and 1
        d["views"][1] = d["views"][0].clone()
        d["boxes"][1], d["ids"][1], d["levels"][1] = d["boxes"][0], d["ids"][0], d["levels"][0]
    model.predictor = torch.nn.Identity()
    model.target.load_state_dict(model.online.state_dict())
    r = retrieval_diagnostic(model, [batch])["v1_v2"]
    assert r["num_boxes"] == 4 and r["top1"] == 1.0


def test_batch_norm_statistics_of_the_loss_without_touching_the_running_ones():
    model = _tiny_soco()
    batch = _soco_batch()
    with torch.no_grad():  # running statistics away from their initial 0 / 1
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    as_loss = pretrain_embeddings(model, batch, "batch")["v1_v2"]
    running = pretrain_embeddings(model, batch, "running")["v1_v2"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing moved, EMA included
    # "batch" is the training forward's normalisation: the online predictor output of the loss
    model.train()
    with torch.no_grad():
        model.momentum_schedule.step = lambda *a: None  # no EMA step in this check
        bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bn:
            m.momentum = 0.0
        feats = model._features(model.online, torch.stack([d["views"][0] for d in batch]))
        levels = torch.cat([d["levels"][0] for d in batch])
        online = model._embed(
            model.online, model.predictor, feats, [d["boxes"][0] for d in batch], levels
        )
    torch.testing.assert_close(as_loss[0], online)
    assert not torch.allclose(as_loss[0], running[0], atol=1e-3)
    with pytest.raises(ValueError, match="norm_stats"):
        pretrain_embeddings(model, batch, "frozen")


# ------------------------------------------------------------------------------- AlignDet


@pytest.fixture
def squares_image(tmp_path):
    from PIL import Image

    img = np.full((128, 160, 3), 120, np.uint8)
    boxes = []
    for i, (x, y) in enumerate([(8, 8), (100, 10), (20, 80), (110, 70)]):
        img[y : y + 32, x : x + 32] = (40 * i + 30, 200 - 40 * i, 90)
        boxes.append([x, y, x + 31, y + 31])
    path = tmp_path / "squares.png"
    Image.fromarray(img).save(path)
    d = {"file_name": str(path), "image_id": 1, "height": 128, "width": 160}
    return d, np.array(boxes, np.float32)


def _aligndet(kind):
    cfg = load_config(ALIGNDET[kind])
    torch.manual_seed(0)
    return instantiate(cfg.model)


@pytest.mark.parametrize("kind", sorted(ALIGNDET))
def test_aligndet_embeddings_and_detector_boxes(kind, squares_image):
    from detectron2.data import transforms as T
    from detectron2.utils.events import EventStorage

    from d2ext.projects.aligndet import AlignDetDatasetMapper

    d, boxes = squares_image
    mapper = AlignDetDatasetMapper(
        proposals=lambda _: boxes, augmentations=[T.ResizeShortestEdge(128, 160)]
    )
    model = _aligndet(kind).train()
    batch = [mapper(d), mapper(d)]
    torch.manual_seed(0)
    q, qi, k, ki = pretrain_embeddings(model, batch, norm_stats="running")["v1_v2"]
    assert model.training
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad(), EventStorage():
        out = model(batch)
    torch.testing.assert_close(q, out["queries"])
    torch.testing.assert_close(k, out["keys"])
    assert torch.equal(qi, out["query_ids"]) and torch.equal(ki, out["key_ids"])
    assert set(qi[qi >= 0].tolist()) <= set(range(8))  # 4 ids per image, offset per image

    detector = model.online
    limits = ("test_score_thresh", "num_detections", "test_topk_per_image")

    def current_limits():
        return {
            (n, a): getattr(m, a)
            for n, m in detector.named_modules()
            for a in limits
            if hasattr(m, a)
        }

    before = current_limits()
    assert before  # every family has a test-time limit the diagnostic lifts
    inputs = [{"image": batch[0]["views"][0]["image"], "height": 64, "width": 80}]
    found = detector_boxes(detector, inputs, top_k=7)
    assert current_limits() == before  # restored
    ((b, s),) = found
    # the threshold is off: the untrained classifier's low scores still give boxes (an
    # untrained FCOS predicts mostly inverted boxes, which detectron2's postprocess drops)
    assert 0 < len(b) <= 7 and len(s) == len(b) and (s[:-1] >= s[1:]).all()
    if kind != "fcos":
        assert len(b) == 7
    assert (b[:, 0::2] <= 80 + 1e-3).all() and (b[:, 1::2] <= 64 + 1e-3).all()
    if kind == "faster_rcnn":
        ((rb, rs),) = rpn_boxes(detector, inputs, top_k=5)
        assert len(rb) == 5 and (rs[:-1] >= rs[1:]).all()
        assert (rb[:, 0::2] <= 80 + 1e-3).all() and (rb[:, 1::2] <= 64 + 1e-3).all()
    else:
        with pytest.raises(TypeError, match="proposal_generator"):
            rpn_boxes(detector, inputs)


# ------------------------------------------------------------------------------- recall


def test_average_recall_equals_the_hand_computation():
    gt = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
        torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
        torch.tensor([[50.0, 50.0, 60.0, 60.0]]),  # its image has no box: a miss
    ]
    boxes = [
        # exact copy of gt 0 (IoU 1); IoU 0.82 with gt 1 (10x8.2 box inside it, 82 / 100);
        # a better-scored duplicate of gt 0: one box takes one gt only
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 28.2], [0.0, 0.0, 10.0, 10.0]]),
        # IoU 0.625 (8x5 inside 8x8, 40 / 64) ranked below a miss; limit 2 keeps both
        torch.tensor([[30.0, 30.0, 40.0, 40.0], [0.0, 0.0, 8.0, 5.0]]),
        torch.zeros(0, 4),
    ]
    scores = [torch.tensor([0.5, 0.4, 0.9]), torch.tensor([0.9, 0.1]), torch.zeros(0)]
    r = average_recall(boxes, scores, gt, limit=3)
    thresholds = np.arange(0.5, 0.95 + 1e-5, 0.05)
    ious = np.array([1.0, 0.82, 0.625, 0.0])
    expected = [(ious >= t).sum() / 4 for t in thresholds]
    np.testing.assert_allclose(r["recalls"], expected, atol=1e-6)
    assert r["ar"] == pytest.approx(np.mean(expected), abs=1e-6)  # (3 * 3 + 4 * 2 + 3 * 1) / 40
    assert r["ar"] == pytest.approx(0.5, abs=1e-6) and r["num_gt"] == 4
    # the limit keeps the highest scores: at 1 per image, image 1 keeps its miss only and
    # image 0 its duplicate of gt 0
    r1 = average_recall(boxes, scores, gt, limit=1)
    assert r1["ar"] == pytest.approx(10 / 40, abs=1e-6)
    with pytest.raises(ValueError, match="no reference boxes"):
        average_recall([torch.zeros(0, 4)], [torch.zeros(0)], [torch.zeros(0, 4)])


# ------------------------------------------------------------------------------- loss curves


def _write_metrics(path):
    rows = [
        {"iteration": 0, "total_loss": 4.0, "loss_a": 3.0, "loss_b": 1.0, "lr": 0.1},
        {"iteration": 1, "total_loss": 3.0, "loss_a": 2.0, "loss_b": 1.0},
        {"iteration": 2, "total_loss": 9.0, "loss_a": 8.0, "loss_b": 1.0},  # abandoned run
        {"iteration": 3, "total_loss": 9.0, "loss_a": 8.0, "loss_b": 1.0},  # abandoned run
    ]
    resumed = [
        {"iteration": 2, "total_loss": 2.0, "loss_a": 1.5, "loss_b": 0.5},
        {"iteration": 3, "total_loss": 1.0, "loss_a": 0.8, "loss_b": 0.2, "bbox/AP": 5.0},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    text += '{"iteration": 4, "total_lo\n'  # a line cut by a kill
    text += "".join(json.dumps(r) + "\n" for r in resumed)
    path.write_text(text)


def test_loss_curves_from_a_resumed_run(tmp_path):
    metrics = tmp_path / "run" / "metrics.json"
    metrics.parent.mkdir()
    _write_metrics(metrics)
    records = read_metrics(str(metrics))
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert [r["total_loss"] for r in records] == [4.0, 3.0, 2.0, 1.0]
    png = tmp_path / "out" / "loss.png"
    keys = plot_loss_curves(str(metrics), str(png))
    assert keys == ["total_loss", "loss_a", "loss_b"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["loss.png"]  # no temporary left
    with pytest.raises(ValueError, match="no loss terms"):
        plot_loss_curves(str(metrics), str(png), keys=["loss_missing"])


# ------------------------------------------------------------------------------- the tool


def _register(name, dicts):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    """4 held-out unlabeled demo images with SoCo and AlignDet proposals and their ground-truth
    cache, 2 labelled images."""
    from detectron2.data import DatasetCatalog

    from d2ext.data.datasets.demo import write_ground_truth_proposals
    from d2ext.proposals import ALIGNDET_FILTER, SOCO_FILTER, dataset_items, generate_proposals

    from ..helpers import demo_data_root

    demo_data_root()
    heldout = "d2ext_demo_unlabeled_large_heldout"
    _register("test_pd_heldout", DatasetCatalog.get(heldout)[:4])
    _register("test_pd_gt", DatasetCatalog.get("d2ext_demo_shapes_val")[:2])
    root = tmp_path_factory.mktemp("pd_proposals")
    caches = {"gt_heldout": str(root / "gt")}
    write_ground_truth_proposals(heldout, caches["gt_heldout"])
    for name, filt in (("soco", SOCO_FILTER), ("aligndet", ALIGNDET_FILTER)):
        caches[name] = str(root / name)
        items = dataset_items("test_pd_heldout")
        generate_proposals(items, caches[name], filt=filt, workers=1, progress=False)
    return caches


def test_proposal_reference_reads_inclusive_or_continuous_boxes(tiny_sets):
    from detectron2.data import DatasetCatalog

    from d2ext.data.datasets.demo import split_boxes

    d = DatasetCatalog.get("test_pd_heldout")[1]
    h, w = d["height"], d["width"]
    truth = {r["image_id"]: r for r in split_boxes("d2ext_demo_unlabeled_large_heldout")}
    boxes = truth[d["image_id"]]["boxes"]
    limits = np.array([w, h, w, h], np.float32)
    continuous = proposal_reference(tiny_sets["gt_heldout"], inclusive=False)(d, h, w)
    np.testing.assert_allclose(continuous, np.minimum(boxes, limits))
    inclusive = proposal_reference(tiny_sets["gt_heldout"], inclusive=True)(d, h, w)
    np.testing.assert_allclose(inclusive, np.minimum(boxes + [0, 0, 1, 1], limits))
    # by default the cache's settings decide: a ground-truth cache holds continuous boxes
    assert not cache_box_convention(tiny_sets["gt_heldout"])
    assert cache_box_convention(tiny_sets["aligndet"])  # selective search: inclusive pixels
    np.testing.assert_array_equal(proposal_reference(tiny_sets["gt_heldout"])(d, h, w), continuous)


@pytest.mark.parametrize(
    "method, config, opts",
    [
        ("soco", SOCO, ["model.projector_hidden_dim=64", "model.out_dim=32"]),
        (
            "aligndet",
            ALIGNDET["faster_rcnn"],
            [
                "dataloader.train.mapper.augmentations.0.short_edge_length=[96,112]",
                "dataloader.train.mapper.augmentations.0.max_size=160",
            ],
        ),
    ],
)
def test_tool_pretrained_vs_random_writes_every_key(
    tmp_path, tiny_sets, method, config, opts, capsys
):
    from detectron2.config import LazyConfig

    from ..helpers import REPO

    tool = load_tool("pretrain_diagnostics")
    cfg = LazyConfig.apply_overrides(load_config(config), opts)
    torch.manual_seed(1)
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "model_final.pth"
    torch.save({"model": instantiate(cfg.model).state_dict(), "iteration": 3}, ckpt)
    _write_metrics(run / "metrics.json")
    out = tmp_path / "out"
    argv = [
        "--config",
        f"{REPO}/{config}",
        "--checkpoint",
        str(ckpt),
        "--random-control",
        "--dataset",
        "test_pd_heldout",
        "--proposals",
        tiny_sets[method],
        "--gt-dataset",
        "test_pd_gt",
        "--reference",
        f"gt_heldout={tiny_sets['gt_heldout']}",
        "--batch-size",
        "2",
        "--out",
        str(out),
        *opts,
    ]
    printed = tool.main(argv)
    result = json.loads((out / "pretrain_diagnostics.json").read_text())
    assert result["method"] == method and result["num_images"] == 4
    assert result["images_seen_in_pretraining"] == 0  # held out of the pretraining pool
    assert set(result["retrieval"]) == {"pretrained", "random"}
    pairs = {"v1_v2", "v1_v3"} if method == "soco" else {"v1_v2"}
    for arm in ("pretrained", "random"):
        assert set(result["retrieval"][arm]) == pairs
        for r in result["retrieval"][arm].values():
            keys = {"hits", "num_boxes", "num_batches", "top1", "chance", "ratio"}
            assert set(r) == keys | {"pos_cos", "neg_cos", "auc"}
            assert r["num_boxes"] > 0 and 0 <= r["top1"] <= 1
            assert r["chance"] == pytest.approx(r["num_batches"] / r["num_boxes"])
    if method == "aligndet":
        for arm in ("pretrained", "random"):
            assert set(result["ar"][arm]) == {"pseudo", "gt", "gt_heldout"}
            assert result["references"]["gt_heldout"]["inclusive"] is False  # from its settings
            # 1-3 objects per held-out image
            assert 4 <= result["ar"][arm]["gt_heldout"]["rpn"]["num_gt"] <= 12
            for ref in ("pseudo", "gt", "gt_heldout"):
                assert set(result["ar"][arm][ref]) == {"detector", "rpn"}
                for r in result["ar"][arm][ref].values():
                    assert 0 <= r["ar"] <= 1 and len(r["recalls"]) == 10 and r["num_gt"] > 0
    else:
        assert "ar" not in result
    assert result["loss_terms"] == ["total_loss", "loss_a", "loss_b"]
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert table == diagnostics_table(printed) + "\n"
    assert "v1_v2" in table and ("AR@100 gt_heldout/rpn" in table) == (method == "aligndet")
    safe = json_safe({"a": [math.nan, 1.0], "b": (2, math.nan)})
    assert safe == {"a": [None, 1.0], "b": [2, None]}


def test_tool_errors(tmp_path):
    tool = load_tool("pretrain_diagnostics")
    base = ["--config", SOCO, "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="--checkpoint, --random-control"):
        tool.main(base)
    with pytest.raises(SystemExit, match="not registered"):
        tool.main([*base, "--random-control", "--dataset", "no_such_set"])
    for bad in (["--reference", "no_folder"], ["--reference", "gt=x"], ["--reference", "a=x"] * 2):
        with pytest.raises(SystemExit, match="NAME=CACHE_DIR"):
            tool.main([*base, "--random-control", *bad])
    # overrides after the options stay overrides
    args = tool.build_parser().parse_args([*base, "--dataset", "a", "train.seed=1", "x.y=8"])
    assert args.dataset == ["a"] and args.opts == ["train.seed=1", "x.y=8"]
    # --gt-dataset without a name: no labelled set (the SoCo demo's call)
    assert tool.build_parser().parse_args([*base, "--gt-dataset"]).gt_dataset == []
    assert tool.build_parser().parse_args(base).gt_dataset is None  # the default set


def test_pretrained_embeddings_of_other_models_are_refused():
    with pytest.raises(TypeError, match="no pretraining embeddings"):
        pretrain_embeddings(torch.nn.Linear(2, 2), [{}])
