"""SoCo: the three-view mapper, the pretraining network and its transfer to Faster R-CNN."""

import math

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from PIL import Image

from d2ext.checkpoint.convert import compare_with_model, convert_state_dict
from d2ext.layers import assign_levels_soco
from d2ext.projects.soco import SOCO_TO_DETECTRON2, SoCoDatasetMapper, byol_loss
from d2ext.projects.soco.mapper import SOCO_BOX_LIST_VIEWS

from ..helpers import load_config

PRETRAIN = "projects/SoCo/configs/soco_R18_FPN_4conv1fc_demo.py"
FINETUNE = "projects/SoCo/configs/faster_rcnn_R18_FPN_4conv1fc_demo.py"


@pytest.fixture
def square_image(tmp_path):
    """A dark 200x300 image with one bright square, and the square as the proposal."""
    img = np.full((200, 300, 3), 20, np.uint8)
    img[60:140, 100:180] = 240
    path = tmp_path / "square.png"
    Image.fromarray(img).save(path)
    box = np.array([[100, 60, 179, 139]], np.float32)  # inclusive XYXY
    return {"file_name": str(path), "image_id": 7, "height": 200, "width": 300}, box


def _mapper(boxes, **kw):
    kw.setdefault("colour_augmentation", False)
    return SoCoDatasetMapper(proposals=lambda d: boxes, **kw)


def _inside_mean(view: torch.Tensor, box: torch.Tensor) -> tuple[float, float]:
    """Mean intensity inside the box (shrunk by 2 px) and outside it (grown by 2 px)."""
    img = view.float().mean(0)
    x1, y1, x2, y2 = box.tolist()
    inside = img[int(y1) + 2 : int(y2) - 2, int(x1) + 2 : int(x2) - 2]
    mask = torch.ones_like(img, dtype=torch.bool)
    mask[max(int(y1) - 2, 0) : int(y2) + 3, max(int(x1) - 2, 0) : int(x2) + 3] = False
    return float(inside.mean()), float(img[mask].mean()) if mask.any() else 0.0


VIEWS = SOCO_BOX_LIST_VIEWS  # (0, 1, 0, 2): the view of each of the four box lists


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_boxes_land_on_the_object_in_every_view(square_image, flip_prob):
    d, box = square_image
    torch.manual_seed(0)
    mapper = _mapper(box, jitter_prob=0.0, flip_prob=flip_prob, crop_scale=(0.6, 1.0))
    for _ in range(5):
        out = mapper(d)
        assert [tuple(v.shape) for v in out["views"]] == [(3, 224, 224)] * 2 + [(3, 112, 112)]
        assert all(v.dtype == torch.uint8 for v in out["views"])
        assert len(out["boxes"]) == len(out["ids"]) == len(out["levels"]) == 4
        for v, boxes, ids, levels in zip(VIEWS, out["boxes"], out["ids"], out["levels"]):
            view = out["views"][v]
            assert boxes.shape == (4, 4) and levels.shape == (4,) and ids.tolist() == [1] * 4
            size = view.shape[-1]
            assert (boxes >= 0).all() and (boxes <= size).all()
            # every box is the square (the only proposal), padded with copies of it
            assert torch.equal(boxes, boxes[:1].expand(4, 4))
            inside, outside = _inside_mean(view, boxes[0])
            assert inside > 200 and outside < 60, (inside, outside)
        # V1 is the whole image: the box is the square scaled by 224 / size, exactly
        x1, y1, x2, y2 = 100 * 224 / 300, 60 * 224 / 200, 180 * 224 / 300, 140 * 224 / 200
        want = [224 - x2, y1, 224 - x1, y2] if flip_prob else [x1, y1, x2, y2]
        np.testing.assert_allclose(out["boxes"][0][0].numpy(), want, rtol=1e-5)
        np.testing.assert_allclose(out["boxes"][2][0].numpy(), want, rtol=1e-5)


def test_levels_are_socos_rule_on_truncated_inclusive_view_boxes(square_image):
    d, box = square_image
    torch.manual_seed(1)
    out = _mapper(box, jitter_prob=0.0, flip_prob=0.0)(d)
    # V1: the square (100..179, 60..139) scaled to 224 and truncated: x 74..133, y 67..155
    # -> sqrt(60 * 89) = 73.1 -> P3 (48 < s <= 96)
    assert out["levels"][0].tolist() == [1] * 4 and out["levels"][2].tolist() == [1] * 4
    for lst in (1, 3):
        b = out["boxes"][lst][0].numpy()  # continuous; SoCo's inclusive: x2 - scale
        assert 0 <= int(out["levels"][lst][0]) <= 3
    # a box whose truncated size is just above 48 goes to P3, just at 48 to P2
    from d2ext.projects.soco.mapper import _levels

    crop = (0, 0, 224, 224)  # identity scale
    local = np.array([[0, 0, 47, 47], [0, 0, 48, 47], [10, 10, 9.5, 20]], np.float64)
    assert _levels(local, crop, 224, (48, 96, 192, 224)).tolist() == [0, 1, -1]
    del b


def _two_cluster_image(tmp_path):
    img = np.full((200, 400, 3), 30, np.uint8)
    path = tmp_path / "two.png"
    Image.fromarray(img).save(path)
    d = {"file_name": str(path), "image_id": 3, "height": 200, "width": 400}
    # 10 proposals spread over the image, 40x40 each
    props = np.array([[20 + 36 * i, 80, 59 + 36 * i, 119] for i in range(10)], np.float64)
    return d, props


def test_each_pair_draws_its_own_boxes_and_v1_is_jittered_per_pair(tmp_path):
    d, props = _two_cluster_image(tmp_path)
    mapper = _mapper(props, jitter_prob=1.0, flip_prob=0.0, crop_scale=(0.3, 0.5))
    differ_ids = differ_jitter = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out = mapper(d)
        ids12, ids13 = set(out["ids"][0].tolist()), set(out["ids"][2].tolist())
        differ_ids += ids12 != ids13
        # each pair's boxes come from its own crop: V2's ids overlap crop 2, not nec. crop 3
        assert set(out["ids"][1].tolist()) <= set(range(1, 11))
        # V1 lists: every box of list 0 (resp. 2) has its partner id in list 1 (resp. 3)
        assert set(out["ids"][0].tolist()) & set(out["ids"][1].tolist())
        assert set(out["ids"][2].tolist()) & set(out["ids"][3].tolist())
        # the same proposal in both pairs is jittered independently
        common = ids12 & ids13
        for i in common:
            a = out["boxes"][0][out["ids"][0] == i][0]
            b = out["boxes"][2][out["ids"][2] == i][0]
            differ_jitter += not torch.allclose(a, b)
    assert differ_ids >= 10  # separate draws: the two pairs' proposals differ most of the time
    assert differ_jitter > 0


def test_retry_rule_needs_two_then_one_candidate_in_both_pairs(square_image, monkeypatch):
    """Crops are drawn again until both pairs have >= 2 candidates; after a failed try the
    threshold halves to 1 (SoCo dataset.py:694-714)."""
    import d2ext.projects.soco.mapper as m

    d, _ = square_image
    props = np.array([[0, 0, 40, 40], [5, 5, 45, 45], [250, 150, 299, 199]], np.float64)
    left = (0, 0, 60, 60)  # overlaps proposals 1 and 2
    right = (140, 240, 60, 60)  # overlaps proposal 3 only
    seq = []

    def fake_crops(sequence):
        it = iter(sequence)
        monkeypatch.setattr(m, "_crop_params", lambda *a: next(it))

    # try 1: pair 13 has 1 candidate (< 2) -> retry; try 2: 1 and 1 >= 1 -> accept
    fake_crops([left, right, right, right, left, left])
    mapper = _mapper(props, num_boxes=4)
    crop2, crop3, (b12, i12), (b13, i13) = mapper.select(props, 200, 300)
    assert (crop2, crop3) == (right, right) and i12.tolist() == [3] and i13.tolist() == [3]
    # try 1 already has >= 2 in both pairs: accepted at once
    fake_crops([left, left, right, right])
    crop2, crop3, (b12, i12), (b13, i13) = mapper.select(props, 200, 300)
    assert (crop2, crop3) == (left, left) and sorted(i12.tolist()) == [1, 2]
    # a pair with no candidate after max_tries: the last draw is used, empty
    fake_crops([right, (0, 100, 20, 20)] * 5)
    crop2, crop3, (b12, i12), (b13, i13) = mapper.select(props, 200, 300)
    assert i12.tolist() == [3] and len(i13) == 0
    del seq, b12, b13


def test_padding_per_list_with_unjittered_copies_and_fallback_ids(square_image):
    from d2ext.projects.soco.mapper import _clip, _pad

    boxes = np.array([[10, 10, 50, 50], [60, 60, 90, 90]], np.float64)
    ids = np.array([4, 9])
    torch.manual_seed(0)
    padded, pids = _pad(boxes, ids, np.array([9, 12]), 4)
    assert pids.tolist()[:2] == [4, 9] and pids.tolist()[2:] == [9, 9]  # only the common id
    np.testing.assert_array_equal(padded[2:], boxes[[1, 1]])  # exact copies, no jitter
    # no common id: padded from its own boxes, which then have no partner
    _, pids = _pad(boxes, ids, np.array([1]), 4)
    assert set(pids.tolist()) <= {4, 9} and len(pids) == 4
    # clipping to a crop: local coordinates, SoCo's strict rule, fallback = whole crop, id 1
    crop = (20, 30, 50, 40)  # top 20, left 30, h 50, w 40: x 30..69, y 20..69
    out, oid = _clip(np.array([[0, 0, 30, 100], [40, 30, 100, 50]], np.float64), ids, crop, "soco")
    assert oid.tolist() == [9]  # box 4 touches x = left only (x2 == left): dropped
    np.testing.assert_array_equal(out, [[10, 10, 39, 30]])
    out, oid = _clip(np.array([[0, 0, 30, 100]], np.float64), ids[:1], crop, "soco")
    assert oid.tolist() == [1] and out.tolist() == [[0, 0, 39, 49]]


def test_views_sharing_no_box_and_images_without_proposals_give_a_defined_batch(square_image):
    d, box = square_image
    torch.manual_seed(0)
    for props in (np.zeros((0, 4)), np.array([[-50, -50, -10, -10]], np.float64)):
        out = _mapper(props)(d)  # all proposals filtered out: the whole image is the proposal
        for boxes, ids, levels in zip(out["boxes"], out["ids"], out["levels"]):
            assert boxes.shape == (4, 4) and ids.tolist() == [1] * 4
            assert torch.isfinite(boxes).all() and (levels >= 0).all()
    # V1's jittered boxes all dropped (strict rule): V1 falls back to id 1, V2 keeps id 1 too
    # here; with a proposal id that is not 1, V1's fallback and V2's box share no id
    from d2ext.projects.soco import mapper as m

    torch.manual_seed(0)
    lists = [
        m._clip(np.array([[-30, 10, -1, 40]], np.float64), np.array([2]), (0, 0, 200, 300), "soco"),
        m._clip(
            np.array([[100, 60, 179, 139]], np.float64), np.array([2]), (0, 0, 200, 300), "soco"
        ),
    ]
    assert lists[0][1].tolist() == [1] and lists[1][1].tolist() == [2]
    a = m._pad(*lists[0], lists[1][1], 4)
    b = m._pad(*lists[1], lists[0][1], 4)
    assert a[1].tolist() == [1] * 4 and b[1].tolist() == [2] * 4  # defined, no pairs


def test_cutout_inside_boxes_only_with_the_mean_fill(square_image):
    d, box = square_image
    torch.manual_seed(0)
    plain = _mapper(box, jitter_prob=0.0, flip_prob=0.0)
    cut = _mapper(box, jitter_prob=0.0, flip_prob=0.0, cutout_prob=1.0, cutout_ratio=(0.1, 0.3))
    changed_views = 0
    for seed in range(8):
        torch.manual_seed(seed)
        a = plain(d)
        torch.manual_seed(seed)
        b = cut(d)
        assert torch.equal(a["views"][0], b["views"][0])  # V1 never cut
        for v, lst in ((1, 1), (2, 3)):
            diff = (a["views"][v] != b["views"][v]).any(0)
            if not diff.any():
                continue
            changed_views += 1
            # filled with the RGB ImageNet mean, rounded
            assert (b["views"][v][:, diff].T == torch.tensor([124, 116, 104])).all()
            x1, y1, x2, y2 = b["boxes"][lst][0].tolist()
            side = ((0.3 * (x2 - x1 + 1) * (y2 - y1 + 1)) ** 0.5) / 2 + 1
            ys, xs = torch.nonzero(diff, as_tuple=True)
            assert xs.min() >= x1 - side and xs.max() <= x2 + side
            assert ys.min() >= y1 - side and ys.max() <= y2 + side
            # the cut area is 10-30 % of the box per square (4 copies of the box: <= 4 squares)
            area = (x2 - x1) * (y2 - y1)
            assert diff.sum() <= 4 * 0.3 * area * 1.3
    assert changed_views >= 8
    from d2ext.projects.soco.mapper import cutout_in_boxes

    # integral and fractional box coordinates both run (the authors' class raises on floats)
    view = torch.zeros(3, 50, 50, dtype=torch.uint8)
    out = cutout_in_boxes(view, np.array([[10.37, 10.5, 30.2, 30.9]]), 1.0, (0.2, 0.2), (9, 9, 9))
    ys, xs = torch.nonzero(out[0] == 9, as_tuple=True)
    side = int(round((0.2 * (30.2 - 10.37 + 1) * (30.9 - 10.5 + 1)) ** 0.5))
    assert len(xs) > 0 and xs.max() - xs.min() + 1 <= side + 1
    cx, cy = (xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2
    assert 10 <= cx <= 30 and 10 <= cy <= 30  # the centre lies in the box


def test_jitter_moves_v1_boxes_only_with_the_given_probability(square_image):
    d, box = square_image
    moved = total = 0
    exact = torch.tensor([100.0, 60.0, 180.0, 140.0]) * torch.tensor([224 / 300, 224 / 200] * 2)
    for seed in range(60):
        outs = []
        for prob in (0.3, 0.0):
            torch.manual_seed(seed)
            outs.append(_mapper(box, num_boxes=4, jitter_prob=prob, flip_prob=0.0)(d))
        jit, plain = outs
        for lst in (1, 3):  # V2 and V3 never jittered: the same boxes as without jitter
            assert torch.equal(jit["boxes"][lst], plain["boxes"][lst])
        for lst in (0, 2):
            assert torch.allclose(plain["boxes"][lst], exact.expand(4, 4), atol=1e-4)
            # one proposal, padded with copies of the list's box, not jittered again
            assert torch.equal(jit["boxes"][lst][1:], jit["boxes"][lst][:1].expand(3, 4))
            moved += int(not torch.isclose(jit["boxes"][lst][0], exact, atol=1e-4).all())
            total += 1
    assert abs(moved / total - 0.3) < 0.12, moved / total  # 120 boxes: 2.9 sigma


def test_downsampled_small_view_is_v2_at_half_size(square_image):
    d, box = square_image
    torch.manual_seed(5)
    out = _mapper(box, small_view="downsample", flip_prob=0.0)(d)
    np.testing.assert_allclose(out["boxes"][3].numpy(), out["boxes"][1].numpy() / 2, rtol=1e-6)


def test_mapper_errors(square_image):
    d, _ = square_image
    with pytest.raises(ValueError, match="NaN"):
        _mapper(np.array([[0, 0, np.nan, 5]], np.float32))(d)
    with pytest.raises(ValueError, match="small_view"):
        _mapper(np.zeros((0, 4)), small_view="zoom")
    with pytest.raises(ValueError, match="clip_rule"):
        _mapper(np.zeros((0, 4)), clip_rule="clamp")


def test_byol_loss_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(byol_loss(a, b).numpy(), [0.0, 2.0, 4.0], atol=1e-6)


def _tiny_soco():
    cfg = load_config(PRETRAIN)
    cfg.model.projector_hidden_dim = 64
    cfg.model.out_dim = 32
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _batch(levels_v3=None, ids=None):
    """2 images, views 64/64/32, 4 box lists of 2 boxes (ids 1 and 2 in every list)."""
    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(2):
        views = [
            torch.randint(0, 255, (3, s, s), generator=g, dtype=torch.uint8) for s in (64, 64, 32)
        ]
        boxes = [
            torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 8.0, 60.0, 60.0]]) * s / 64
            for s in (64, 64, 64, 32)
        ]
        levels = [assign_levels_soco(b, inclusive=False) for b in boxes]
        if levels_v3 is not None:
            levels[3] = torch.full_like(levels[3], levels_v3)
        box_ids = [torch.tensor([1, 2]) for _ in range(4)] if ids is None else ids
        batch.append({"views": views, "boxes": boxes, "levels": levels, "ids": box_ids})
    return batch


def test_network_losses_gradients_and_momentum():
    model = _tiny_soco().train()
    assert model.pooler.level_rule is None  # the mapper owns the level rule
    losses = model(_batch())
    assert sorted(losses) == ["loss_v1_v2", "loss_v1_v3", "loss_v2_v1", "loss_v3_v1"]
    assert all(math.isfinite(float(v)) and 0 <= float(v) <= 4 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.online.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    # momentum 1 keeps the target; momentum 0 copies the online network
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(0.5)
    before = [p.clone() for p in model.target.parameters()]
    model.momentum_update(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.target.parameters()))
    model.momentum_update(0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(model.online.parameters(), model.target.parameters())
    )


def test_every_box_is_pooled_at_every_level_one_head_batch_per_level():
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        _check_all_level_pooling()


def _check_all_level_pooling():
    model = _tiny_soco().train()
    sizes = []
    model.online.box_head.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    model(_batch())
    # 4 box lists x 4 levels, each batch all 2 x 2 boxes of the list
    assert sizes == [4] * 16
    # in eval mode (no batch statistics) both poolings give the same embeddings
    model.eval()
    with torch.no_grad():
        a = model(_batch())
        model.pool_all_levels = False
        b = model(_batch())
    for x, y, valid in zip(a["online"], b["online"], a["valid"]):
        torch.testing.assert_close(x[valid], y[valid], rtol=1e-4, atol=1e-5)
    sizes.clear()
    model.train()
    model(_batch())
    assert sizes == [4] * 4  # one batch per list
    with pytest.raises(ValueError, match="level_assignments"):
        feats = [torch.zeros(1, 8, 8, 8)] * 4
        from detectron2.structures import Boxes

        model.pooler(feats, [Boxes(torch.tensor([[0.0, 0, 4, 4]]))])


def _manual_loss(model, batch, a, b):
    """SoCo's loss by hand: per image, mean over same-id pairs of 2 - 2 cos; mean over images."""
    model.eval()
    with torch.no_grad():
        out = model(batch)
    q, k = out["online"][a], out["target"][b]
    ia, ib = out["ids"][a], out["ids"][b]
    va, vb = out["valid"][a], out["valid"][b]
    per_image = []
    n = len(batch[0]["boxes"][a])
    for i in range(len(batch)):
        rows = range(i * n, (i + 1) * n)
        terms = [
            2 - 2 * torch.nn.functional.cosine_similarity(q[r], k[c], dim=0)
            for r in rows
            for c in rows
            if ia[r] == ib[c] and va[r] and vb[c]
        ]
        per_image.append(sum(terms) / len(terms) if terms else torch.tensor(0.0))
    return float(sum(per_image) / len(per_image))


def test_pairs_are_matched_by_id_and_averaged_per_image():
    model = _tiny_soco()
    # list 1 (V2) carries its boxes in the other order: the ids say which is which
    swapped = _batch(ids=[torch.tensor([1, 2]), torch.tensor([2, 1])] + [torch.tensor([1, 2])] * 2)
    for d in swapped:
        d["boxes"][1] = d["boxes"][1].flip(0)
        d["levels"][1] = d["levels"][1].flip(0)
    for batch in (_batch(), swapped):
        want = _manual_loss(model, batch, 0, 1)
        # BN in train mode would change the embeddings: compare in eval through _pair_loss
        with torch.no_grad():
            out = model(batch)
            got = model._pair_loss(
                out["online"][0],
                out["target"][1],
                out["ids"][0],
                out["ids"][1],
                out["valid"][0],
                out["valid"][1],
                torch.tensor([0, 0, 1, 1]),
                torch.tensor([0, 0, 1, 1]),
                2,
            )
        assert abs(float(got) - want) < 1e-4
    # the swapped batch pairs the same boxes as the plain one: same loss
    assert abs(_manual_loss(model, swapped, 0, 1) - _manual_loss(model, _batch(), 0, 1)) < 1e-5
    # duplicates add pairs: id 1 twice in V2 weighs box 1 twice
    dup = _batch(ids=[torch.tensor([1, 2]), torch.tensor([1, 1])] + [torch.tensor([1, 2])] * 2)
    assert abs(_manual_loss(model, dup, 0, 1) - _manual_loss(model, _batch(), 0, 1)) > 1e-6


def test_zero_init_of_the_last_norm_in_every_residual_block():
    from detectron2.modeling.backbone.resnet import BasicBlock

    model = _tiny_soco()
    blocks = [m for m in model.online.backbone.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    assert all(float(b.conv2.norm.weight.abs().sum()) == 0 for b in blocks)
    assert all(float(b.conv1.norm.weight.abs().sum()) > 0 for b in blocks)
    cfg = load_config(PRETRAIN)
    cfg.model.zero_init_residual = False
    torch.manual_seed(0)
    other = instantiate(cfg.model)
    assert all(
        float(b.conv2.norm.weight.abs().sum()) > 0
        for b in other.online.backbone.modules()
        if isinstance(b, BasicBlock)
    )


def test_one_training_step_moves_online_by_gradient_and_target_by_ema():
    """Step 0 moves the online network by its gradient; the next training forward first moves
    the target by the EMA with m(1), as the authors do right after step 0."""
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    from d2ext.modeling.momentum import cosine_momentum

    model = _tiny_soco().train()
    model.momentum_schedule.total_steps = 4
    online0 = {k: p.detach().clone() for k, p in model.online.named_parameters()}
    target0 = {k: p.detach().clone() for k, p in model.target.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = 0.5
    trainer = SimpleTrainer(model, [_batch()], torch.optim.SGD(trainable, lr=lr))
    trainer.iter, trainer.max_iter = 0, 4
    with EventStorage(0) as trainer.storage:
        trainer.run_step()
        # step 0's forward had nothing to update: the target is the initial copy
        assert all(torch.equal(p, target0[k]) for k, p in model.target.named_parameters())
        for k, p in model.online.named_parameters():
            torch.testing.assert_close(p.detach(), online0[k] - lr * p.grad, rtol=1e-6, atol=1e-6)
        model(_batch())  # iteration 1's forward
        assert trainer.storage.history("momentum").latest() == cosine_momentum(0.99, 1, 4)
    m = cosine_momentum(0.99, 1, 4)
    assert 0.99 < m < 1.0 and int(model.momentum_schedule.iteration) == 2
    moved = 0
    for k, p in model.target.named_parameters():
        assert p.grad is None
        expected = m * target0[k] + (1 - m) * dict(model.online.named_parameters())[k].detach()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-6)
        moved += not torch.equal(p, target0[k])
    assert moved > 0  # the EMA did move the target (online weights changed by the step)


def test_pairs_without_valid_boxes_or_shared_ids_give_zero_but_keep_the_graph():
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        _check_empty_pairs()


def _check_empty_pairs():
    model = _tiny_soco().train()
    losses = model(_batch(levels_v3=-1))
    assert float(losses["loss_v1_v3"]) == 0.0 and float(losses["loss_v3_v1"]) == 0.0
    assert float(losses["loss_v1_v2"]) > 0
    sum(losses.values()).backward()
    # views that share no box id: a defined batch and a finite (zero) loss for that pair
    model.zero_grad()
    none = _batch(ids=[torch.tensor([1, 2]), torch.tensor([3, 4])] + [torch.tensor([1, 2])] * 2)
    losses = model(none)
    assert float(losses["loss_v1_v2"]) == 0.0 and float(losses["loss_v2_v1"]) == 0.0
    assert all(math.isfinite(float(v)) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    out = model(_batch())
    assert len(out["online"]) == 4 and out["online"][0].shape == (4, 32)


def test_mapper_output_of_a_bad_image_trains(square_image):
    """An image whose proposals are all filtered out, mapped and fed with a normal one."""
    d, box = square_image
    cfg = load_config(PRETRAIN)
    torch.manual_seed(0)
    batch = [
        _mapper(np.zeros((0, 4)), view_size=64, small_view_size=32)(d),
        _mapper(box, view_size=64, small_view_size=32)(d),
    ]
    model = _tiny_soco().train()
    losses = model(batch)
    assert all(math.isfinite(float(v)) for v in losses.values())
    sum(losses.values()).backward()
    del cfg


def test_soco_checkpoint_loads_into_the_finetuning_detector():
    soco = _tiny_soco()
    state = {k: v.clone() for k, v in soco.state_dict().items()}
    new, report = convert_state_dict(state, SOCO_TO_DETECTRON2)
    detector = instantiate(load_config(FINETUNE).model)
    diff = compare_with_model(detector, new)
    assert not diff["unexpected"] and not diff["shape_mismatch"]
    loaded = set(diff["loaded"])
    backbone_and_head = {
        k for k in detector.state_dict() if k.startswith(("backbone.", "roi_heads.box_head."))
    }
    assert backbone_and_head <= loaded  # every backbone, FPN and box-head tensor carried over
    assert not any(k.startswith(("target.", "predictor.")) for k in new)
    assert any("online.projector" in k for k in report.unused)
    detector.load_state_dict(new, strict=False)
    for k in backbone_and_head:
        src = k.replace("roi_heads.box_head.", "online.box_head.", 1)
        src = src if src.startswith("online.") else "online." + k
        assert torch.equal(detector.state_dict()[k], state[src]), k


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
    rows = train_two_gloo_processes(PRETRAIN, tmp_path, overrides)
    last = [r for r in rows if "loss_v1_v2" in r][-1]
    assert last["iteration"] == 1 and 0 < last["momentum"] <= 1
    state = torch.load(tmp_path / "model_final.pth", map_location="cpu")["model"]
    assert any(k.startswith("target.") for k in state) and "predictor.0.weight" in state


FULL_100 = "projects/SoCo/configs/soco_R50_FPN_4conv1fc_in1k_100ep.py"
FULL_400 = "projects/SoCo/configs/soco_R50_FPN_4conv1fc_in1k_400ep.py"
TRANSFER = "projects/SoCo/configs/mask_rcnn_R50_FPN_4conv1fc_SyncBN_1x_coco.py"
RGB_MEAN, RGB_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _built_mapper(path):
    cfg = load_config(path)
    cfg.dataloader.train.mapper.proposals = None  # no proposal cache needed to build it
    return instantiate(cfg.dataloader.train.mapper)


def test_full_recipes_build_the_authors_mapper_and_schedule():
    m100, m400 = _built_mapper(FULL_100), _built_mapper(FULL_400)
    assert (m100.cutout_prob, m100.cutout_ratio) == (0.5, (0.1, 0.3))
    assert m400.cutout_prob == 0.0  # the 400-epoch dataset class has no cutout
    for m in (m100, m400):
        assert m.image_format == "RGB" and m.clip_rule == "soco" and m.num_boxes == 4
        assert (m.jitter_prob, m.jitter_ratio, m.max_tries) == (0.5, 0.1, 5)
        assert m.cutout_fill == tuple(RGB_MEAN)
    cfg = load_config(FULL_100)
    sched = instantiate(cfg.lr_multiplier)
    max_iter = cfg.train.max_iter
    warmup = 10 * 1281167 // 2048
    assert sched(0.0) == pytest.approx(0.01)  # SoCo: lr / 100 at the start
    assert sched(warmup / max_iter) == pytest.approx(1.0, abs=1e-6)
    # the cosine spans the post-warmup iterations: 0.5 half-way between warmup and the end
    assert sched((warmup + (max_iter - warmup) / 2) / max_iter) == pytest.approx(0.5, abs=1e-4)


def test_full_recipe_model_pools_all_levels_zero_inits_and_normalises_as_soco():
    from detectron2.modeling.backbone.resnet import BottleneckBlock

    torch.manual_seed(0)
    model = instantiate(load_config(FULL_100).model)
    assert model.pool_all_levels and model.loss_average == "image"
    assert model.pooler.level_rule is None
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(RGB_MEAN))
    torch.testing.assert_close(model.pixel_std.flatten(), torch.tensor(RGB_STD))
    blocks = [m for m in model.online.backbone.modules() if isinstance(m, BottleneckBlock)]
    assert len(blocks) == 16
    assert all(float(b.conv3.norm.weight.abs().sum()) == 0 for b in blocks)


@pytest.mark.parametrize("path", [TRANSFER, FINETUNE])
def test_finetuning_inputs_are_the_pretraining_inputs(path):
    cfg = load_config(path)
    torch.manual_seed(0)
    detector = instantiate(cfg.model)
    assert detector.input_format == "RGB"
    torch.testing.assert_close(detector.pixel_mean.flatten(), torch.tensor(RGB_MEAN))
    torch.testing.assert_close(detector.pixel_std.flatten(), torch.tensor(RGB_STD))
    assert cfg.dataloader.train.mapper.image_format == "RGB"
    assert cfg.dataloader.test.mapper.image_format == "RGB"
    soco = _tiny_soco()
    torch.testing.assert_close(soco.pixel_mean, detector.pixel_mean)
    torch.testing.assert_close(soco.pixel_std, detector.pixel_std)
    assert _built_mapper(PRETRAIN).image_format == "RGB"


class _BNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.bn = torch.nn.BatchNorm2d(2)

    def forward(self, batch):
        return {"loss": self.bn(self.conv(batch)).pow(2).mean()}


def test_precise_bn_hook_takes_the_trainers_model_and_sets_true_statistics():
    from detectron2.engine import SimpleTrainer
    from fvcore.nn.precise_bn import update_bn_stats

    from d2ext.projects.soco.hooks import PreciseBN

    cfg = load_config(TRANSFER)
    hook_cfg = cfg.train.extra_hooks[0]
    assert hook_cfg.num_iter == 200 and hook_cfg.period == cfg.train.eval_period
    assert hook_cfg.data_loader.mapper.image_format == "RGB"  # the training loader

    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 1, 3, 3, generator=g) * 2 + 5 for _ in range(8)]
    torch.manual_seed(0)
    model = _BNNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights fixed: statistics are exact
    trainer = SimpleTrainer(model, batches * 10, opt)
    trainer.register_hooks([PreciseBN(period=0, data_loader=batches, num_iter=8)])
    trainer.train(0, 2)  # runs after the last iteration
    with torch.no_grad():
        feats = torch.cat([model.conv(b) for b in batches])
    torch.testing.assert_close(model.bn.running_mean, feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    # in a loop of one's own: fvcore's update_bn_stats gives the same statistics
    other = _BNNet()
    other.load_state_dict(
        {k: v for k, v in model.state_dict().items() if "running" not in k}, strict=False
    )
    update_bn_stats(other, iter(batches), 8)
    torch.testing.assert_close(other.bn.running_mean, model.bn.running_mean)
