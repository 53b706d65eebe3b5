"""The two-stage Deformable DETR base detector: deformable attention against a per-point loop,
Hungarian matching, losses and their weights, look-forward-twice, the detector end to end."""

import itertools
import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_convert, generalized_box_iou

from d2ext.modeling.deformable_detr import (
    ChannelMapper,
    DeformableDETR,
    DeformableTransformer,
    HungarianMatcher,
    MSDeformAttn,
    SetCriterion,
    box_sine_embedding,
    decoder_loss_weights,
    focal_class_cost,
    multi_scale_deformable_attn,
)


def _bilinear(img, x, y):
    """img (D, H, W); (x, y) continuous pixel coordinates with centres at integers; zeros
    outside (grid_sample's align_corners=False, padding zeros)."""
    d, h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(d, dtype=img.dtype)
    for xi, yi in itertools.product((x0, x0 + 1), (y0, y0 + 1)):
        wx = 1 - abs(x - xi)
        wy = 1 - abs(y - yi)
        if 0 <= xi < w and 0 <= yi < h:
            out += wx * wy * img[:, yi, xi]
    return out


def test_deformable_attention_matches_a_per_point_loop():
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4)]
    n, q, m, d, p = 2, 3, 2, 4, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=torch.float64)
    # locations partly outside [0, 1] exercise the zero padding
    loc = torch.rand(n, q, m, len(shapes), p, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    attn = torch.rand(n, q, m, len(shapes), p, generator=g, dtype=torch.float64)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    out = multi_scale_deformable_attn(value, torch.tensor(shapes), loc, attn)
    assert out.shape == (n, q, m * d)
    expected = torch.zeros(n, q, m, d, dtype=torch.float64)
    for b, qi, head in itertools.product(range(n), range(q), range(m)):
        start = 0
        for lvl, (h, w) in enumerate(shapes):
            img = value[b, start : start + h * w, head].T.reshape(d, h, w)
            for pt in range(p):
                x = loc[b, qi, head, lvl, pt, 0].item() * w - 0.5
                y = loc[b, qi, head, lvl, pt, 1].item() * h - 0.5
                expected[b, qi, head] += attn[b, qi, head, lvl, pt] * _bilinear(img, x, y)
            start += h * w
    torch.testing.assert_close(out, expected.view(n, q, m * d), rtol=1e-10, atol=1e-10)


def test_deformable_attention_module_masks_padding_and_takes_boxes():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    shapes = torch.tensor([[4, 4], [2, 2]])
    value = torch.randn(1, 20, 16)
    query = torch.randn(1, 3, 16)
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, 12:16] = True  # last row of level 0 is padding
    ref = torch.rand(1, 3, 2, 2) * 0.5
    out = attn(query, ref, value, shapes, mask)
    changed = value.clone()
    changed[0, 12:16] = 1e3
    torch.testing.assert_close(attn(query, ref, changed, shapes, mask), out)
    boxes = torch.cat([ref, torch.full_like(ref, 0.3)], -1)
    out_box = attn(query, boxes, value, shapes, mask)
    assert out_box.shape == (1, 3, 16) and not torch.allclose(out_box, out)
    with pytest.raises(ValueError, match="2 or 4"):
        attn(query, torch.rand(1, 3, 2, 3), value, shapes, mask)


def test_box_sine_embedding_layout():
    box = torch.tensor([[0.25, 0.5, 0.1, 0.2]])
    emb = box_sine_embedding(box, num_feats=8)
    assert emb.shape == (1, 32)
    # first coordinate, frequency 0: sin(0.25 * 2pi) then cos(0.25 * 2pi)
    torch.testing.assert_close(emb[0, :2], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    # second coordinate starts at index 8: sin(pi), cos(pi)
    torch.testing.assert_close(emb[0, 8:10], torch.tensor([0.0, -1.0]), atol=1e-6, rtol=0)


def test_focal_class_cost_value():
    logits = torch.tensor([[0.0, 2.0]])
    p = torch.sigmoid(torch.tensor(2.0))
    expected = 0.25 * (1 - p) ** 2 * -torch.log(p) - 0.75 * p**2 * -torch.log(1 - p)
    torch.testing.assert_close(
        focal_class_cost(logits, torch.tensor([1]))[0, 0], expected, atol=1e-6, rtol=1e-5
    )


def test_hungarian_matching_hand_made_case():
    """Two queries on the same box: the class decides, crossing the index order."""
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    box = [0.5, 0.5, 0.2, 0.2]
    logits = torch.tensor([[[-5.0, 5.0, -5.0], [-5.0, -5.0, 5.0], [5.0, -5.0, -5.0]]])
    boxes = torch.tensor([[box, box, [0.1, 0.1, 0.05, 0.05]]])
    targets = [{"labels": torch.tensor([2, 1]), "boxes": torch.tensor([box, box])}]
    ((qi, ti),) = matcher(logits, boxes, targets)
    assert dict(zip(qi.tolist(), ti.tolist())) == {0: 1, 1: 0}
    # no target: empty match
    ((qi, ti),) = matcher(
        logits, boxes, [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    )
    assert len(qi) == len(ti) == 0


def test_hungarian_matching_is_the_minimum_cost_assignment():
    g = torch.Generator().manual_seed(3)
    matcher = HungarianMatcher()
    for _ in range(5):
        logits = torch.randn(1, 5, 4, generator=g)
        boxes = torch.rand(1, 5, 4, generator=g) * 0.5 + 0.2
        tgt = {
            "labels": torch.randint(4, (3,), generator=g),
            "boxes": torch.rand(3, 4, generator=g) * 0.5 + 0.2,
        }
        cost = matcher.cost_matrix(logits[0], boxes[0], tgt["labels"], tgt["boxes"])
        ((qi, ti),) = matcher(logits, boxes, [tgt])
        got = cost[qi, ti].sum()
        best = min(
            cost[list(perm), [0, 1, 2]].sum() for perm in itertools.permutations(range(5), 3)
        )
        torch.testing.assert_close(got, best)
        # and the cost's parts are the paper's: L1 5, focal 2, -GIoU 2
        giou = generalized_box_iou(
            box_convert(boxes[0], "cxcywh", "xyxy"), box_convert(tgt["boxes"], "cxcywh", "xyxy")
        )
        l1 = torch.cdist(boxes[0], tgt["boxes"], p=1)
        torch.testing.assert_close(
            cost, 5 * l1 + 2 * focal_class_cost(logits[0], tgt["labels"]) - 2 * giou
        )


def test_decoder_loss_weights_are_a_function_of_the_layer_count():
    w = decoder_loss_weights(6, loss_class=2.0, loss_bbox=5.0, loss_giou=2.0)
    assert len(w) == 3 * 7
    assert w["loss_class"] == 2.0 and w["loss_bbox_0"] == 5.0 and w["loss_giou_4"] == 2.0
    assert w["loss_class_enc"] == 2.0 and "loss_class_5" not in w
    assert set(decoder_loss_weights(3, two_stage=False)) == {
        f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("_0", "_1", "")
    }


def _criterion(**kw):
    return SetCriterion(
        num_classes=3, matcher=HungarianMatcher(), weight_dict=decoder_loss_weights(2, **kw)
    )


def test_criterion_weights_and_exact_boxes():
    tgt_box = torch.tensor([0.5, 0.5, 0.2, 0.4])
    logits = torch.full((2, 1, 4, 3), -4.0)
    logits[:, 0, 0, 1] = 4.0
    boxes = torch.rand(2, 1, 4, 4) * 0.2 + 0.3
    boxes[:, 0, 0] = tgt_box  # query 0 is exact
    targets = [{"labels": torch.tensor([1]), "boxes": tgt_box[None]}]
    out = {"pred_logits": logits, "pred_boxes": boxes, "enc_logits": None}
    losses = _criterion()(out, targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("_0", "")}
    assert losses["loss_bbox"].item() == 0 and abs(losses["loss_giou"].item()) < 1e-5
    doubled = _criterion(loss_class=4.0)(out, targets)
    torch.testing.assert_close(doubled["loss_class"], 2 * losses["loss_class"])
    # an image without objects: classification only, boxes give 0
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    losses = _criterion()(out, empty)
    assert losses["loss_bbox"].item() == 0 and losses["loss_class"].item() > 0


def _transformer(look_forward_twice=True):
    torch.manual_seed(0)
    return DeformableTransformer(
        num_classes=3,
        d_model=32,
        n_heads=4,
        num_encoder_layers=1,
        num_decoder_layers=3,
        dim_feedforward=64,
        dropout=0.0,
        n_levels=2,
        n_points=2,
        num_queries=10,
        look_forward_twice=look_forward_twice,
    )


def _encode(tr):
    feats = [torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)]
    masks = [torch.zeros(1, 8, 8, dtype=torch.bool), torch.zeros(1, 4, 4, dtype=torch.bool)]
    pos = [torch.zeros_like(f) for f in feats]
    return tr.encode(feats, masks, pos)


@pytest.mark.parametrize("lft", [True, False])
def test_look_forward_twice_reaches_exactly_one_layer_back(lft):
    tr = _transformer(lft)
    for emb in tr.bbox_embed:  # non-zero box deltas so gradients flow
        torch.nn.init.normal_(emb.layers[-1].weight, std=0.1)
    enc = _encode(tr)
    content, qpos, ref = tr.select_queries(enc)
    _, boxes = tr.decode(enc, content, qpos, ref)
    tr.zero_grad()
    boxes[2].sum().backward()  # the last layer's boxes only
    grad = [e.layers[-1].weight.grad for e in tr.bbox_embed[:3]]
    assert grad[2] is not None and grad[2].abs().sum() > 0
    reached = grad[1] is not None and grad[1].abs().sum() > 0
    assert reached == lft
    assert grad[0] is None or grad[0].abs().sum() == 0


def test_decoder_layers_refine_from_the_previous_layer():
    tr = _transformer()
    enc = _encode(tr)
    content, qpos, ref = tr.select_queries(enc)
    assert ref.shape == (1, 10, 4) and not ref.requires_grad
    _, boxes = tr.decode(enc, content, qpos, ref)
    # with zero-initialised box deltas every layer returns the selected proposals
    torch.testing.assert_close(boxes[0], ref)
    torch.testing.assert_close(boxes[2], ref)
    # mixed selection: content from the learned embeddings, positions from the boxes
    torch.testing.assert_close(content[0], tr.query_embed.weight)


def _tiny_detr():
    torch.manual_seed(0)
    bb = ResNet(
        BasicStem(3, 64, norm="BN"),
        ResNet.make_default_stages(18, norm="BN"),
        out_features=["res3", "res4", "res5"],
    )
    neck = ChannelMapper(
        input_shapes=bb.output_shape(),
        in_features=["res3", "res4", "res5"],
        out_channels=32,
        num_groups=8,
    )
    tr = DeformableTransformer(
        num_classes=3,
        d_model=32,
        n_heads=4,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dim_feedforward=64,
        dropout=0.0,
        n_levels=4,
        n_points=2,
        num_queries=20,
    )
    crit = SetCriterion(
        num_classes=3, matcher=HungarianMatcher(), weight_dict=decoder_loss_weights(2)
    )
    return DeformableDETR(
        backbone=bb,
        neck=neck,
        transformer=tr,
        criterion=crit,
        pixel_mean=(100.0, 110.0, 120.0),
        pixel_std=(50.0, 50.0, 50.0),
        num_detections=15,
    )


def _inputs():
    a = Instances((96, 128))
    a.gt_boxes = Boxes(
        torch.tensor([[10.0, 20.0, 60.0, 70.0], [70.0, 5.0, 140.0, 50.0]])
    )  # leaves the image
    a.gt_classes = torch.tensor([1, 2])
    b = Instances((64, 96))
    b.gt_boxes = Boxes(torch.zeros(0, 4))
    b.gt_classes = torch.zeros(0, dtype=torch.long)
    return [
        {"image": torch.rand(3, 96, 128) * 255, "instances": a, "height": 192, "width": 256},
        {"image": torch.rand(3, 64, 96) * 255, "instances": b, "height": 64, "width": 96},
    ]


def test_detector_trains_and_predicts_in_detectron2_format():
    model = _tiny_detr()
    inputs = _inputs()
    targets = model.prepare_targets(inputs, model.preprocess_image(inputs))
    # the out-of-image box is clipped to the image before normalising
    assert targets[0]["boxes"].max() <= 1 and targets[0]["boxes_xyxy"][1, 2] == 128
    losses = model(inputs)
    assert len(losses) == 9 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.neck.convs[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    r = out[0]["instances"]
    assert r.image_size == (192, 256) and len(r) == 15
    assert r.pred_boxes.tensor[:, 2].max() <= 256 and r.scores.max() <= 1
    assert len(out[1]["instances"]) == 15
    with pytest.raises(ValueError, match="empty batch"):
        model([])


def test_channel_mapper_levels():
    shapes = {"res3": ShapeSpec(channels=8, stride=8), "res5": ShapeSpec(channels=16, stride=32)}
    neck = ChannelMapper(
        input_shapes=shapes,
        in_features=["res3", "res5"],
        out_channels=16,
        num_extra_levels=2,
        num_groups=4,
    )
    outs = neck({"res3": torch.randn(1, 8, 16, 16), "res5": torch.randn(1, 16, 4, 4)})
    assert [o.shape[-1] for o in outs] == [16, 4, 2, 1]
    assert [s.stride for s in neck.output_shape()] == [8, 32, 64, 128]
    with pytest.raises(ValueError, match="res4"):
        ChannelMapper(input_shapes=shapes, in_features=["res4"])


def test_deformable_attention_gradcheck():
    g = torch.Generator().manual_seed(1)
    shapes = torch.tensor([[3, 4], [2, 2]])
    value = torch.randn(1, 16, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    loc = (
        torch.rand(1, 2, 2, 2, 2, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
    ).requires_grad_()
    attn = torch.rand(1, 2, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, sl, a: multi_scale_deformable_attn(v, shapes, sl, a), (value, loc, attn)
    )
