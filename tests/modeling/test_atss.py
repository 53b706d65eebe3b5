"""ATSS: the assigner on hand-made cases and against a per-box loop, and the head's losses."""

import math

import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances, pairwise_iou

from d2ext.modeling.atss import ATSSHead, atss_assign, centerness_targets


def _grid(centres, size):
    c = torch.tensor(centres, dtype=torch.float32)
    return torch.cat([c - size / 2, c + size / 2], 1)


LEVEL0 = _grid([(5, 5), (15, 5), (25, 5), (35, 5), (5, 15), (15, 15), (25, 15), (35, 15)], 10)
LEVEL1 = _grid([(10, 10), (30, 10)], 20)


def test_threshold_is_mean_plus_std_of_the_candidates():
    # gt centre (9, 8): candidates (5,5) .347, (15,5) .260, (5,15) .183 on level 0 and both
    # level-1 anchors (.72, 0). Threshold mean + std = .568: only the level-1 anchor.
    # (mean alone, .302, would also take the (5,5) anchor)
    gt = torch.tensor([[0.0, 0.0, 18.0, 16.0]])
    assigned = atss_assign([LEVEL0, LEVEL1], gt, topk=3)
    assert (assigned >= 0).nonzero()[:, 0].tolist() == [8]


def test_candidate_centre_must_lie_inside_the_box():
    anchors = [
        torch.tensor(
            [[0.0, 0.0, 40.0, 40.0], [100.0, 100.0, 110.0, 110.0], [200.0, 0.0, 210.0, 10.0]]
        )
    ]
    # IoU .2256 is above the threshold (.205) but the anchor centre (20, 20) is outside
    assert (atss_assign(anchors, torch.tensor([[0.0, 0.0, 19.0, 19.0]]), topk=3) == -1).all()
    assert atss_assign(anchors, torch.tensor([[0.0, 0.0, 21.0, 21.0]]), topk=3).tolist() == [
        0,
        -1,
        -1,
    ]


def test_anchor_claimed_twice_goes_to_the_box_it_overlaps_most():
    anchors = [_grid([(5, 5), (15, 5), (25, 5)], 10)]
    gts = torch.tensor([[0.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0]])  # IoU .909 and 1.0
    assert atss_assign(anchors, gts, topk=3).tolist() == [1, -1, -1]
    assert atss_assign(anchors, gts.flip(0), topk=3).tolist() == [0, -1, -1]
    assert (atss_assign(anchors, torch.zeros(0, 4), topk=3) == -1).all()


def _loop_reference(levels, gts, topk):
    anchors = torch.cat(levels)
    iou = pairwise_iou(Boxes(anchors), Boxes(gts))
    best = torch.full((len(anchors),), -1.0)
    out = torch.full((len(anchors),), -1, dtype=torch.long)
    for g in range(len(gts)):
        gc = (gts[g, :2] + gts[g, 2:]) / 2
        cands, start = [], 0
        for lvl in levels:
            d = [float(torch.dist((a[:2] + a[2:]) / 2, gc)) for a in lvl]
            order = sorted(range(len(lvl)), key=lambda i: d[i])[:topk]
            cands += [start + i for i in order]
            start += len(lvl)
        vals = [float(iou[i, g]) for i in cands]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        for i, v in zip(cands, vals):
            cx, cy = ((anchors[i, :2] + anchors[i, 2:]) / 2).tolist()
            inside = min(cx - gts[g, 0], cy - gts[g, 1], gts[g, 2] - cx, gts[g, 3] - cy) > 0.01
            if v >= mean + std and inside and v > best[i]:
                best[i], out[i] = v, g
    return out


def test_assigner_matches_a_per_box_loop():
    g = torch.Generator().manual_seed(0)
    levels = []
    for stride in (8, 16, 32):
        ys, xs = torch.meshgrid(
            torch.arange(0, 96, stride), torch.arange(0, 128, stride), indexing="ij"
        )
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float() + 0.37 * stride  # no distance ties
        levels.append(torch.cat([c - 2 * stride, c + 2 * stride], 1))
    for _ in range(3):
        xy = torch.rand(6, 2, generator=g) * torch.tensor([100.0, 70.0])
        wh = torch.rand(6, 2, generator=g) * 50 + 6
        gts = torch.cat([xy, xy + wh], 1)
        got = atss_assign(levels, gts, topk=9)
        assert torch.equal(got, _loop_reference(levels, gts, 9))
        assert (got >= 0).sum() > 0


def test_centerness_targets():
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]]
    )  # centres (5,5), (10,10)
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 20.0, 20.0]])
    torch.testing.assert_close(centerness_targets(anchors, gt), torch.tensor([1 / 3, 1.0]))


def test_head_losses_and_positives():
    torch.manual_seed(0)
    shapes = [ShapeSpec(channels=16, stride=s) for s in (8, 16, 32)]
    head = ATSSHead(
        input_shape=shapes,
        num_classes=3,
        anchor_scale=4.0,
        num_groups=4,
        loss_weights={"loss_bbox": 4.0},
    )
    feats = [torch.randn(2, 16, 96 // s, 128 // s) for s in (8, 16, 32)]
    a = Instances((96, 128))
    a.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 30.0, 120.0, 90.0]]))
    a.gt_classes = torch.tensor([2, 0])
    b = Instances((96, 128))
    b.gt_boxes = Boxes(torch.zeros(0, 4))
    b.gt_classes = torch.zeros(0, dtype=torch.long)
    losses, positives = head.losses(feats, [a, b])
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
    assert all(torch.isfinite(v) for v in losses.values())
    anchors = [x.tensor for x in head.anchor_generator(feats)]
    expected = atss_assign(anchors, a.gt_boxes.tensor, 9)
    pos = expected >= 0
    assert torch.equal(positives[0]["labels"][pos], a.gt_classes[expected[pos]])
    assert (positives[0]["labels"][~pos] == 3).all() and (positives[1]["labels"] == 3).all()
    assert torch.equal(positives[0]["target_boxes"][pos], a.gt_boxes.tensor[expected[pos]])
    assert anchors[0][0].tolist() == [-16.0, -16.0, 16.0, 16.0]  # 4 x stride 8, centre at 0
    sum(losses.values()).backward()
    assert head.cls_logits.weight.grad.abs().sum() > 0 and head.scales[0].scale.grad is not None
    # the configured weight scales the GIoU term
    head.loss_weights["loss_bbox"] = 2.0
    again, _ = head.losses(feats, [a, b])
    torch.testing.assert_close(again["loss_bbox"] * 2, losses["loss_bbox"])
