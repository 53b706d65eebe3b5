"""DINO: the contrastive denoising queries (layout, attention mask, noise rates), their losses
under the known assignment, DN off = the plain two-stage path, DINO's query selection and
decoder, and training on batches with no boxes or more boxes than denoising queries."""

import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torchvision.ops import box_convert

from d2ext.modeling.deformable_detr import HungarianMatcher
from d2ext.modeling.dino import (
    DINO,
    ContrastiveDenoising,
    DINOTransformer,
    dn_attention_mask,
)

from ..helpers import load_config

DEMO = "projects/CoDETR/configs/dino_R18_demo.py"


def _shrink(model_cfg, num_dn=10):
    model_cfg.transformer.update(num_encoder_layers=1, num_decoder_layers=2, num_queries=20)
    model_cfg.denoising.num_dn_queries = num_dn
    model_cfg.num_detections = 15
    return model_cfg


def _dino(**overrides) -> DINO:
    cfg = _shrink(load_config(DEMO).model)
    cfg.update(overrides)
    torch.manual_seed(0)
    return instantiate(cfg)


def _instances(size, boxes, classes):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def _inputs():
    g = torch.Generator().manual_seed(1)
    a = _instances((96, 128), [[10, 20, 60, 70], [70, 5, 120, 50], [30, 30, 90, 90]], [1, 2, 4])
    b = _instances((128, 96), [[5, 5, 40, 60]], [0])
    return [
        {"image": torch.rand(3, 96, 128, generator=g) * 255, "instances": a},
        {"image": torch.rand(3, 128, 96, generator=g) * 255, "instances": b},
    ]


def _targets(counts, num_classes=5):
    out = []
    for c in counts:
        labels = torch.arange(c) % num_classes
        boxes = torch.tensor([[0.2 + 0.1 * j, 0.5, 0.1, 0.2] for j in range(c)]).reshape(-1, 4)
        out.append({"labels": labels, "boxes": boxes})
    return out


def test_dn_attention_mask_equals_a_hand_built_one():
    # 2 images with 2 and 1 boxes -> max_gt 2; 5 DN queries -> 5 // 2 = 2 groups of 2 + 2
    dn = ContrastiveDenoising(num_classes=5, d_model=8, num_dn_queries=5)
    q = dn(_targets([2, 1]), num_queries=3)
    assert (q.num_groups, q.max_gt, q.pad_size, q.num_pos) == (2, 2, 8, 6)
    rows = [  # 1 = blocked; columns: g0 (4) | g1 (4) | matching (3)
        "00001111000",
        "00001111000",
        "00001111000",
        "00001111000",
        "11110000000",
        "11110000000",
        "11110000000",
        "11110000000",
        "11111111000",
        "11111111000",
        "11111111000",
    ]
    hand = torch.tensor([[c == "1" for c in r] for r in rows])
    assert torch.equal(q.attn_mask, hand)
    assert torch.equal(dn_attention_mask(2, 2, 3), hand)
    # layout per image: [g0 pos, g0 neg, g1 pos, g1 neg], max_gt slots each
    bg = 5
    assert q.labels[0].tolist() == [0, 1, bg, bg, 0, 1, bg, bg]
    assert q.labels[1].tolist() == [0, bg, bg, bg, 0, bg, bg, bg]
    free = [1, 3, 5, 7]  # image 1 has one box: its second slot of each half is free
    assert (q.noised_labels[1, free] == -1).all() and (q.noised_labels[1, [0, 2, 4, 6]] >= 0).all()
    assert q.content[1, free].abs().sum() == 0
    torch.testing.assert_close(q.ref[1, free], torch.full((4, 4), 0.5))
    used = q.noised_labels[0]
    torch.testing.assert_close(q.content[0], dn.label_embed(used))
    torch.testing.assert_close(q.target_boxes[0, 4], _targets([2])[0]["boxes"][0])
    assert q.target_boxes[0, 2].abs().sum() == 0  # negatives have no box target


def test_number_of_groups():
    dn = ContrastiveDenoising(num_classes=3, d_model=8, num_dn_queries=100)
    assert [dn.num_groups(n) for n in (0, 1, 3, 100, 101, 500)] == [1, 100, 33, 1, 1, 1]
    q = dn(
        _targets([150, 2], num_classes=3), num_queries=4
    )  # more boxes than DN queries: one group
    assert q.num_groups == 1 and q.pad_size == 300 and q.attn_mask.shape == (304, 304)
    assert dn(_targets([0, 0]), num_queries=4) is None


@pytest.mark.parametrize("scale", [1.0, 0.4])
def test_noise_follows_the_configured_rates(scale):
    torch.manual_seed(0)
    num_classes = 10
    dn = ContrastiveDenoising(
        num_classes=num_classes,
        d_model=4,
        num_dn_queries=1000,
        label_noise_ratio=0.5,
        box_noise_scale=scale,
    )
    gt = {"labels": torch.arange(10), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(10, 1)}
    flips, pos_d, neg_d = [], [], []
    for _ in range(10):
        q = dn([gt], num_queries=1)  # 100 groups x 20 copies
        true = gt["labels"].repeat(2 * q.num_groups)
        flips.append((q.noised_labels[0] != true).float())
        negative = (torch.arange(q.pad_size) // 10) % 2 == 1
        # the query boxes are the noised boxes (a flipped negative's width clamps to 0 there)
        upright = q.ref[0, ~negative]
        torch.testing.assert_close(upright[:, 2:].min() > 0, torch.tensor(True))
        noised = dn.noise_boxes(gt["boxes"].repeat(2 * q.num_groups, 1), negative)
        xyxy = box_convert(noised, "cxcywh", "xyxy")
        d = (xyxy - torch.tensor([0.4, 0.4, 0.6, 0.6])) / (0.1 * scale)  # in units of w/2
        neg = negative[:, None].expand(-1, 4)
        pos_d.append(d[~neg])
        neg_d.append(d[neg])
    flips, pos_d, neg_d = torch.cat(flips), torch.cat(pos_d), torch.cat(neg_d)
    # a label is redrawn with p 0.25 and then differs with p 0.9
    assert abs(flips.mean().item() - 0.25 * 0.9) < 0.01
    # positives move each corner by r * scale * w / 2, r ~ U[0, 1); negatives r ~ U[1, 2)
    tol = 1e-3
    assert pos_d.abs().max() < 1 + tol and neg_d.abs().min() > 1 - tol
    assert neg_d.abs().max() < 2 + tol
    assert abs(pos_d.abs().mean().item() - 0.5) < 0.02
    assert abs(neg_d.abs().mean().item() - 1.5) < 0.02
    assert abs((pos_d > 0).float().mean().item() - 0.5) < 0.02
    assert abs((neg_d > 0).float().mean().item() - 0.5) < 0.02


def spy_matcher(monkeypatch) -> list:
    """Makes every Hungarian matcher call record its number of queries; returns that list."""
    seen = []
    original = HungarianMatcher.forward
    monkeypatch.setattr(
        HungarianMatcher,
        "forward",
        lambda self, logits, *a: seen.append(logits.shape[1]) or original(self, logits, *a),
    )
    return seen


def test_dn_losses_use_the_known_assignment(monkeypatch):
    model = _dino().train()
    seen = spy_matcher(monkeypatch)
    captured = {}
    crit = model.criterion.forward
    monkeypatch.setattr(
        model.criterion, "forward", lambda o, t: captured.update(o=o, t=t) or crit(o, t)
    )
    with EventStorage(0):
        losses = model(_inputs())
    # one match per decoder layer and one for the encoder proposals, all on the 20 queries
    assert seen == [20, 20, 20]
    dn = captured["o"]["denoising"]
    assert (dn.max_gt, dn.num_groups, dn.pad_size) == (3, 3, 18)
    assert captured["o"]["dn_boxes"].shape == (2, 2, 18, 4)
    assert captured["o"]["pred_boxes"].shape == (2, 2, 20, 4)
    # the last layer's L1 term: slot g*2*max_gt + j <-> box j, normalised by boxes x groups
    boxes = captured["o"]["dn_boxes"][-1]
    l1 = 0.0
    for i, t in enumerate(captured["t"]):
        for g in range(3):
            for j in range(len(t["boxes"])):
                l1 = l1 + (boxes[i, g * 6 + j] - t["boxes"][j]).abs().sum()
    torch.testing.assert_close(losses["loss_bbox_dn"], l1 / (4 * 3) * 5.0)
    assert {"loss_class_dn", "loss_giou_0_dn", "loss_class_enc"} <= set(losses)
    assert not any(k.endswith("_enc_dn") for k in losses)  # no encoder loss for DN
    assert len(losses) == 3 * 3 + 3 * 2
    sum(losses.values()).backward()
    assert model.denoising.label_embed.weight.grad.abs().sum() > 0


def test_matching_queries_cannot_see_the_denoising_queries(monkeypatch):
    model = _dino().train()
    inputs = _inputs()
    images = model.preprocess_image(inputs)
    targets = model.prepare_targets(inputs, images)
    with torch.no_grad():
        enc, _ = model.encode(images)
        with_dn = model.forward_queries(enc, targets)
        model.denoising, dn = None, model.denoising
        without = model.forward_queries(enc, targets)
        model.denoising = dn
    assert "denoising" in with_dn and "denoising" not in without
    torch.testing.assert_close(with_dn["pred_logits"], without["pred_logits"])
    torch.testing.assert_close(with_dn["pred_boxes"], without["pred_boxes"])
    # the mask is what isolates them: without it the matching queries change
    monkeypatch.setattr(
        model.transformer,
        "decode",
        lambda *a, attn_mask=None, **k: DINOTransformer.decode(model.transformer, *a, **k),
    )
    with torch.no_grad():
        unmasked = model.forward_queries(enc, targets)
    assert not torch.allclose(unmasked["pred_logits"], without["pred_logits"])


def test_dn_off_runs_the_plain_two_stage_path(monkeypatch):
    model = _dino(denoising=None).train()
    calls = []
    decode = model.transformer.decode
    monkeypatch.setattr(
        model.transformer,
        "decode",
        lambda enc, c, p, r, attn_mask=None: calls.append((c.shape[1], attn_mask))
        or decode(enc, c, p, r, attn_mask=attn_mask),
    )
    with EventStorage(0):
        losses = model(_inputs())
    assert calls == [(20, None)]
    assert len(losses) == 3 * 3 and not any("_dn" in k for k in losses)
    # inference never builds denoising queries
    on = _dino().eval()
    monkeypatch.setattr(
        on.transformer,
        "decode",
        lambda enc, c, p, r, attn_mask=None: calls.append((c.shape[1], attn_mask))
        or DINOTransformer.decode(on.transformer, enc, c, p, r, attn_mask=attn_mask),
    )
    with torch.no_grad():
        out = on(_inputs())
    assert calls[-1] == (20, None) and len(out[0]["instances"]) == 15


def test_query_selection_by_best_class_and_learned_content():
    model = _dino().eval()
    images = model.preprocess_image(_inputs())
    with torch.no_grad():
        enc, _ = model.encode(images)
        content, ref, logits, boxes = model.transformer.select_topk(enc)
    best = enc.enc_logits.max(-1)[0]
    top = best.topk(20, dim=1)[0]
    torch.testing.assert_close(logits.max(-1)[0], top)
    torch.testing.assert_close(content[1], model.transformer.query_embed.weight)
    assert not ref.requires_grad and ref.shape == (2, 20, 4)
    assert not hasattr(model.transformer, "pos_trans")  # positions come from ref_point_head
    with pytest.raises(ValueError, match="query positions"):
        model.transformer.decode(enc, content, content, ref)


@pytest.mark.parametrize("lft", [True, False])
def test_look_forward_twice_reaches_exactly_one_layer_back(lft):
    model = _dino().train()
    tr = model.transformer
    tr.look_forward_twice = lft
    for emb in tr.bbox_embed:  # non-zero box deltas so gradients flow
        torch.nn.init.normal_(emb.layers[-1].weight, std=0.1)
    enc, _ = model.encode(model.preprocess_image(_inputs()))
    content, ref, _, _ = tr.select_topk(enc)
    _, boxes = tr.decode(enc, content, None, ref)
    model.zero_grad()
    boxes[1].sum().backward()  # the last layer's boxes only
    grad = [e.layers[-1].weight.grad for e in tr.bbox_embed[:2]]
    assert grad[1] is not None and grad[1].abs().sum() > 0
    assert (grad[0] is not None and grad[0].abs().sum() > 0) == lft


def bad_input_losses(model):
    """Trains ``model`` one step on a batch without boxes, then one on a batch whose first image
    has 12 boxes (more than the 10 DN queries of ``_shrink``: one group of 12 + 12); returns
    both steps' loss dicts."""
    empty = _inputs()
    for x in empty:
        x["instances"] = _instances(x["image"].shape[1:], [], [])
    with EventStorage(0):
        empty_losses = model(empty)
    sum(empty_losses.values()).backward()
    many = _inputs()
    boxes = [[4 * k, 4 * k, 4 * k + 20, 4 * k + 30] for k in range(12)]
    many[0]["instances"] = _instances((96, 128), boxes, [k % 5 for k in range(12)])
    model.zero_grad()
    with EventStorage(0):
        many_losses = model(many)
    sum(many_losses.values()).backward()
    return empty_losses, many_losses


def test_batches_without_boxes_or_with_more_boxes_than_dn_queries_train():
    empty, many = bad_input_losses(_dino().train())
    assert all(torch.isfinite(v) for v in empty.values())
    assert empty["loss_class_dn"] == 0 and empty["loss_bbox"] == 0
    assert all(torch.isfinite(v) for v in many.values()) and many["loss_bbox_dn"] > 0


def test_dino_needs_its_transformer():
    cfg = _shrink(load_config(DEMO).model)
    cfg.transformer._target_ = "d2ext.modeling.deformable_detr.DeformableTransformer"
    cfg.transformer.mixed_selection = True
    del cfg.transformer.xavier_query_embed
    with pytest.raises(TypeError, match="DINOTransformer"):
        instantiate(cfg)
