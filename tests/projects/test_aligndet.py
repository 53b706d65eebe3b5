"""AlignDet: the box-level InfoNCE, the two-view mapper, the detectors, the wrapper, transfer."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import instantiate
from PIL import Image

from d2ext.projects.aligndet import AlignDetDatasetMapper, box_infonce

from ..helpers import load_config

PRETRAIN = {
    "faster_rcnn": "projects/AlignDet/configs/aligndet_faster_rcnn_R18_FPN_demo.py",
    "retinanet": "projects/AlignDet/configs/aligndet_retinanet_R18_FPN_demo.py",
    "fcos": "projects/AlignDet/configs/aligndet_fcos_R18_FPN_demo.py",
    "detr": "projects/AlignDet/configs/aligndet_deformable_detr_R18_demo.py",
}
FINETUNE = {
    "faster_rcnn": "projects/AlignDet/configs/faster_rcnn_R18_FPN_demo_finetune.py",
    "retinanet": "projects/AlignDet/configs/retinanet_R18_FPN_demo_finetune.py",
    "fcos": "projects/AlignDet/configs/fcos_R18_FPN_demo_finetune.py",
    "detr": "projects/AlignDet/configs/deformable_detr_R18_demo_finetune.py",
}


def _ce(pos: float, negs: list[float]) -> float:
    return -pos + math.log(math.exp(pos) + sum(math.exp(n) for n in negs))


def _naive_infonce(q, q_ids, k, k_ids, t):
    """The definition, one (key, query) pair at a time."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    per_id = []
    for u in sorted({int(i) for i in q_ids if i >= 0}):
        keys = [k[j] for j in range(len(k)) if k_ids[j] == u] or [
            q[j] for j in range(len(q)) if q_ids[j] == u
        ]
        negs = [q[j] for j in range(len(q)) if q_ids[j] != u]
        negs += [k[j] for j in range(len(k)) if k_ids[j] != u]
        pairs = []
        for i in range(len(q)):
            if q_ids[i] != u:
                continue
            for key in keys:
                pairs.append(_ce(float(q[i] @ key) / t, [float(q[i] @ n) / t for n in negs]))
        per_id.append(sum(pairs) / len(pairs))
    return sum(per_id) / len(per_id)


def test_infonce_hand_computed_with_an_id_missing_from_the_momentum_view():
    # id 0 in both views; id 1 only among the queries (its key is the query itself);
    # background samples (-1) in both; the first query is not unit length.
    q = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    k = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    loss = box_infonce(q, torch.tensor([0, 1, -1]), k, torch.tensor([0, -1]), temperature=0.5)
    id0 = _ce(2.0, [0.0, -2.0, 0.0])  # negatives: q1, q2, k1
    id1 = _ce(2.0, [0.0, 0.0, 0.0, -2.0])  # negatives: q0, q2, k0, k1
    assert float(loss) == pytest.approx((id0 + id1) / 2, abs=1e-6)
    loss.backward()
    assert torch.equal(q.grad[2], torch.zeros(2))  # background: a detached negative only
    assert q.grad[0].abs().sum() > 0


def test_infonce_single_proposal_and_no_negatives():
    # one image with one proposal: one id, one background sample per view
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    loss = box_infonce(q, torch.tensor([0, -1]), k, torch.tensor([0, -1]), temperature=0.5)
    assert float(loss) == pytest.approx(_ce(1.2, [0.0, 2.0]), abs=1e-6)
    # nothing but the id itself: no negatives, the loss is 0 (log 1)
    only = box_infonce(q[:1], torch.tensor([0]), k[:1], torch.tensor([0]))
    assert float(only) == pytest.approx(0.0, abs=1e-7)
    # no id among the queries: a zero that keeps the graph
    bg = torch.randn(3, 2, requires_grad=True)
    zero = box_infonce(bg, torch.tensor([-1, -1, -1]), k, torch.tensor([0, -1]))
    assert float(zero) == 0.0 and zero.requires_grad


def test_infonce_matches_the_definition_on_random_samples():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(40, 8, generator=g), torch.randn(30, 8, generator=g)
    q_ids = torch.randint(-1, 7, (40,), generator=g)
    k_ids = torch.randint(-1, 9, (30,), generator=g)  # some ids only in one view
    k_ids[k_ids == 3] = 5  # id 3 has no momentum sample
    got = box_infonce(q, q_ids, k, k_ids, temperature=0.5)
    assert float(got) == pytest.approx(_naive_infonce(q, q_ids, k, k_ids, 0.5), rel=1e-5)
    with pytest.raises(ValueError, match="one id per embedding"):
        box_infonce(q, q_ids[:-1], k, k_ids)
    with pytest.raises(ValueError, match="temperature"):
        box_infonce(q, q_ids, k, k_ids, temperature=0.0)


def _dense_infonce(q, q_ids, k, k_ids, t):
    """The definition with a [queries, samples] same-id mask (autograd reference)."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    every, every_ids = torch.cat([q.detach(), k]), torch.cat([q_ids, k_ids])
    fg = q_ids >= 0
    ids = q_ids[fg]
    sim = q[fg] @ every.T / t
    same = every_ids[None] == ids[:, None]
    lse_neg = torch.logsumexp(sim.masked_fill(same, float("-inf")), dim=1)
    key_same = same[:, len(q) :]
    keys = torch.cat([same[:, : len(q)] & ~key_same.any(1, keepdim=True), key_same], 1)
    losses = F.softplus(lse_neg[:, None] - sim).where(keys, 0.0).sum(1) / keys.sum(1)
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return (losses / counts[inverse]).sum() / len(counts)


@pytest.mark.parametrize("case", ["many ids", "one dominant id", "cold temperature"])
def test_infonce_value_and_gradient_where_the_negatives_sum_is_rebuilt(case):
    # box_infonce forms the negatives' sum as all-samples minus own-id; rows where the own id
    # dominates (few negatives, or negatives underflowing at a cold temperature) take the
    # exact masked path. Value = the per-pair definition, gradient = the dense masked reference.
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(60, 16, generator=g), torch.randn(50, 16, generator=g)
    q_ids = torch.randint(-1, 12, (60,), generator=g)
    k_ids = torch.randint(-1, 12, (50,), generator=g)
    t = 0.5
    if case == "one dominant id":  # id 0 has three negatives: the stable sum cannot be used
        q_ids, k_ids = torch.zeros_like(q_ids), torch.zeros_like(k_ids)
        q_ids[5], k_ids[7] = 1, -1
        k_ids[8] = 1
    elif case == "cold temperature":  # exp((cos - 1) / t) underflows to 0 for many samples
        t = 0.01
    q.requires_grad_(True)
    got = box_infonce(q, q_ids, k, k_ids, temperature=t)
    (grad,) = torch.autograd.grad(got, q)
    ref = _dense_infonce(q, q_ids, k, k_ids, t)
    (ref_grad,) = torch.autograd.grad(ref, q)
    assert float(got) == pytest.approx(_naive_infonce(q.detach(), q_ids, k, k_ids, t), rel=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


COLOURS = [(250, 30, 30), (30, 250, 30), (30, 30, 250), (250, 250, 30)]


@pytest.fixture
def four_squares(tmp_path):
    """A 200x200 grey image with four coloured 40x40 squares, and the squares as proposals."""
    img = np.full((200, 200, 3), 120, np.uint8)
    corners = [(10, 10), (150, 10), (10, 150), (150, 150)]
    boxes = []
    for (x, y), c in zip(corners, COLOURS):
        img[y : y + 40, x : x + 40] = c
        boxes.append([x, y, x + 39, y + 39])  # inclusive, as selective search reports them
    path = tmp_path / "squares.png"
    Image.fromarray(img).save(path)
    d = {"file_name": str(path), "image_id": 3, "height": 200, "width": 200}
    return d, np.array(boxes, np.float32)


def _colour_inside(view: dict, box: torch.Tensor) -> np.ndarray:
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    patch = view["image"][:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].float()
    return patch.mean(dim=(1, 2)).numpy()[::-1]  # BGR -> RGB


def test_mapper_views_follow_boxes_and_keep_ids(four_squares):
    from detectron2.data import transforms as T

    d, boxes = four_squares
    mapper = AlignDetDatasetMapper(
        proposals=lambda _: boxes,
        augmentations=[T.RandomCrop("absolute", (120, 120)), T.RandomFlip(0.5)],
        min_size=4,
    )
    np.random.seed(0)
    one_view_only = 0
    for _ in range(20):
        out = mapper(d)
        assert out["num_ids"] == 4 and len(out["views"]) == 2
        ids_per_view = []
        for view in out["views"]:
            inst = view["instances"]
            assert view["image"].shape == (3, 120, 120) and view["height"] == 120
            assert (inst.gt_classes == 0).all()
            for box, i in zip(inst.gt_boxes.tensor, inst.gt_ids.tolist()):
                # the box in the view still covers its own square's colour
                np.testing.assert_allclose(_colour_inside(view, box), COLOURS[i], atol=1)
            ids_per_view.append(set(inst.gt_ids.tolist()))
        one_view_only += len(ids_per_view[0] ^ ids_per_view[1]) > 0
    assert one_view_only > 0  # boxes leaving one view keep their id in the other


def test_mapper_default_views_resize_flip_and_bad_inputs(four_squares):
    d, boxes = four_squares
    np.random.seed(1)
    out = AlignDetDatasetMapper(proposals=lambda _: boxes)(d)
    for view in out["views"]:
        assert 640 <= min(view["height"], view["width"]) <= 800
        assert view["instances"].gt_ids.tolist() == [0, 1, 2, 3]  # nothing leaves a resize
        scale = view["height"] / 200
        widths = view["instances"].gt_boxes.tensor[:, 2] - view["instances"].gt_boxes.tensor[:, 0]
        np.testing.assert_allclose(widths.numpy(), 40 * scale, rtol=1e-4)
    top2 = AlignDetDatasetMapper(proposals=lambda _: boxes, max_proposals=2)(d)
    assert top2["num_ids"] == 2
    assert AlignDetDatasetMapper(proposals=lambda _: np.zeros((0, 4)))(d) is None
    outside = np.array([[500, 500, 600, 600]], np.float32)  # nothing left after clipping
    assert AlignDetDatasetMapper(proposals=lambda _: outside)(d) is None
    with pytest.raises(ValueError, match="NaN"):
        AlignDetDatasetMapper(proposals=lambda _: np.array([[0, 0, np.nan, 4]]))(d)
    with pytest.raises(ValueError, match="max_proposals"):
        AlignDetDatasetMapper(proposals=lambda _: boxes, max_proposals=0)


def _batch(four_squares, n=2):
    from detectron2.data import transforms as T

    d, boxes = four_squares
    mapper = AlignDetDatasetMapper(
        proposals=lambda _: boxes,
        augmentations=[T.ResizeShortestEdge((160, 192), 320, "range"), T.RandomFlip(0.5)],
    )
    np.random.seed(0)
    return [mapper(d) for _ in range(n)]


def _pretrain_model(kind):
    cfg = load_config(PRETRAIN[kind])
    torch.manual_seed(0)
    return instantiate(cfg.model).train()


LOSSES = {
    "faster_rcnn": {"loss_rpn_cls", "loss_rpn_loc", "loss_box_reg", "loss_align"},
    "retinanet": {"loss_box_reg", "loss_align"},
    "fcos": {"loss_fcos_loc", "loss_fcos_ctr", "loss_align"},
    "detr": {f"loss_{n}{s}" for n in ("bbox", "giou") for s in ("_0", "_1", "", "_enc")}
    | {"loss_class_enc", "loss_align"},
}


@pytest.mark.parametrize("kind", sorted(PRETRAIN))
def test_detectors_step_frozen_backbone_and_pseudo_boxes_as_ground_truth(kind, four_squares):
    from detectron2.utils.events import EventStorage

    model = _pretrain_model(kind)
    online = model.online
    batch = _batch(four_squares)
    seen = []  # the ground truth each assigner received
    if kind == "faster_rcnn":
        heads = online.roi_heads
        original = heads.label_and_sample_proposals

        def spy(proposals, targets):
            seen.extend(t.gt_boxes.tensor.clone() for t in targets)
            return original(proposals, targets)

        heads.label_and_sample_proposals = spy
    elif kind == "detr":
        original = online.criterion.matcher.forward

        def spy(logits, boxes, targets):
            seen.extend(t["boxes_xyxy"].clone() for t in targets)
            return original(logits, boxes, targets)

        online.criterion.matcher.forward = spy
    else:
        original = online._match

        def spy(anchors, instances):
            seen.append(instances.gt_boxes.tensor.clone())
            return original(anchors, instances)

        online._match = spy
    bottom_up = online.backbone if kind == "detr" else online.backbone.bottom_up
    params = {k: p.clone() for k, p in bottom_up.state_dict().items()}
    with EventStorage(0):
        losses = model(batch)
        emb = online.align_forward(model._views(batch, 0), with_losses=False)
    assert set(losses) == LOSSES[kind]
    assert all(math.isfinite(float(v)) for v in losses.values())
    sum(losses.values()).backward()
    # the assigners got view 1's pseudo boxes as ground truth (first call: the online detector)
    for got, d in zip(seen[:2], batch):
        assert torch.equal(got, d["views"][0]["instances"].gt_boxes.tensor)
    # projector outputs: one 256-d embedding per sampled position, ids in range or -1
    _, q, ids = emb
    assert q.dim() == 2 and q.shape[1] == 256 and ids.shape == (len(q),)
    assert ids.min() >= -1 and ids.max() < 8 and (ids >= 4).any()  # second image offset by 4
    if kind in ("retinanet", "fcos"):
        assert len(q) <= 2 * online.num_samples
    # frozen backbone: no gradient, BN statistics unchanged, in eval mode while the model trains
    assert all(p.grad is None and not p.requires_grad for p in bottom_up.parameters())
    assert all(torch.equal(params[k], v) for k, v in bottom_up.state_dict().items())
    if kind == "detr":  # the ResNet is the backbone; the channel mapper is the neck
        assert not bottom_up.training and online.neck.training
        neck = list(online.neck.parameters())
        # box costs only; the query embeddings are copied to the momentum detector
        assert online.criterion.matcher.cost_class == 0
        assert model.copy_keys == ("transformer.query_embed.weight",)
        assert len(q) == 2 * online.transformer.num_queries
    else:
        assert not bottom_up.training and online.backbone.training
        neck = [p for n, p in online.backbone.named_parameters() if not n.startswith("bottom_up.")]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in neck)
    assert all(p.grad is None for p in model.target.parameters())


@pytest.mark.parametrize("kind", sorted(PRETRAIN))
def test_extractor_drops_exactly_the_final_layers(kind):
    from d2ext.checkpoint.convert import compare_with_model
    from d2ext.projects.aligndet import extract_aligndet

    state = _pretrain_model(kind).state_dict()
    detector = instantiate(load_config(FINETUNE[kind]).model)
    final = {
        "faster_rcnn": ("roi_heads.box_predictor.",),
        "retinanet": ("head.cls_score.", "head.bbox_pred."),
        "fcos": ("head.cls_score.", "head.bbox_pred.", "head.ctrness."),
        "detr": ("transformer.class_embed.",)
        + tuple(f"transformer.bbox_embed.{i}.layers.2." for i in range(4)),
    }[kind]
    new, report = extract_aligndet(state)
    diff = compare_with_model(detector, new)
    assert not diff["unexpected"] and not diff["shape_mismatch"]
    assert set(diff["missing"]) == {k for k in detector.state_dict() if k.startswith(final)}
    assert not any("projector" in k or k.startswith("target.") for k in new)
    kept, _ = extract_aligndet(state, keep_predictors=True)
    assert set(kept) - set(new) == {
        k[len("online.") :]
        for k in state
        if k.startswith("online.") and k[len("online.") :].startswith(final)
    }
    for k, v in new.items():
        assert torch.equal(v, state["online." + k])


def test_two_process_gloo_pretraining_step(tmp_path, demo_unlabeled_proposals):
    """`--num-gpus 2` on CPU: two gloo processes run pretraining steps."""
    from ..helpers import train_two_gloo_processes

    overrides = [
        "train.max_iter=2",
        "train.log_period=1",
        "dataloader.train.total_batch_size=4",
        "dataloader.train.num_workers=0",
        f"dataloader.train.mapper.proposals.cache_dir={demo_unlabeled_proposals}",
    ]
    rows = train_two_gloo_processes(PRETRAIN["faster_rcnn"], tmp_path, overrides)
    last = [r for r in rows if "loss_align" in r][-1]
    assert last["iteration"] == 1 and 0.996 <= last["momentum"] <= 1
