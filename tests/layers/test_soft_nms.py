"""d2ext.layers.soft_nms: hand-built cases, a literal transcription of mmcv's CPU kernel as the
slow reference (order and ties included), groups that do not suppress each other, empty input."""

import math

import numpy as np
import pytest
import torch

from d2ext.layers import batched_soft_nms, soft_nms


def _kernel_reference(boxes, scores, iou_threshold, sigma, min_score, method):
    """mmcv's softnms_cpu, one element at a time, in float32 scalars."""
    f = np.float32
    x1, y1, x2, y2 = (list(map(f, boxes[:, k].tolist())) for k in range(4))
    sc = list(map(f, scores.tolist()))
    areas = [(x2[k] - x1[k]) * (y2[k] - y1[k]) for k in range(len(sc))]
    inds = list(range(len(sc)))
    cols = [x1, y1, x2, y2, sc, areas, inds]
    n, i, kept = len(sc), 0, []
    while i < n:
        top = i
        for pos in range(i + 1, n):
            if sc[top] < sc[pos]:
                top = pos
        for c in cols:
            c[i], c[top] = c[top], c[i]
        kept.append((inds[i], float(sc[i])))
        pos = i + 1
        while pos < n:
            w = max(f(0), min(x2[i], x2[pos]) - max(x1[i], x1[pos]))
            h = max(f(0), min(y2[i], y2[pos]) - max(y1[i], y1[pos]))
            inter = w * h
            with np.errstate(divide="ignore", invalid="ignore"):
                ovr = inter / (areas[i] + areas[pos] - inter)
            weight = f(1)
            if method == "linear" and ovr >= f(iou_threshold):
                weight = f(1) - ovr
            elif method == "gaussian":
                weight = f(np.exp(-(ovr * ovr) / f(sigma)))
            elif method == "naive" and ovr >= f(iou_threshold):
                weight = f(0)
            sc[pos] = sc[pos] * weight
            if sc[pos] < f(min_score):
                for c in cols:
                    c[pos] = c[n - 1]
                n -= 1
                pos -= 1
            pos += 1
        i += 1
    return [k for k, _ in kept], [s for _, s in kept]


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


A, B, C, D = [0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]
BOXES = torch.tensor([A, B, C, D], dtype=torch.float32)
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.5])


def test_linear_by_hand():
    iou_ab = _iou(A, B)  # 90 / 110
    assert iou_ab == pytest.approx(0.8181818)
    keep, scores = soft_nms(BOXES, SCORES, iou_threshold=0.8)
    # D is A itself (IoU 1): 0.5 * (1 - 1) = 0 < min_score, dropped; B decays to 0.8 * 0.1818
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, 0.8 * (1 - iou_ab)]))
    # above B's IoU, B is not touched (linear decays only from iou_threshold on)
    keep, scores = soft_nms(BOXES, SCORES, iou_threshold=0.85)
    assert keep.tolist() == [0, 1, 2]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8, 0.7]))


def test_gaussian_by_hand():
    keep, scores = soft_nms(BOXES, SCORES, sigma=0.5, method="gaussian")
    iou_ab = _iou(A, B)
    b = 0.8 * math.exp(-(iou_ab**2) / 0.5)  # 0.2102
    d = 0.5 * math.exp(-1 / 0.5)  # 0.0677; D is decayed by A only (B ranks after C... below)
    # after A: B 0.2102, C 0.7 (IoU 0), D 0.0677; C next (decays nothing), then B, which decays D
    iou_bd = _iou(B, D)
    d *= math.exp(-(iou_bd**2) / 0.5)
    assert keep.tolist() == [0, 2, 1, 3]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, b, d]))
    keep, _ = soft_nms(BOXES, SCORES, method="gaussian", min_score=0.05)
    assert keep.tolist() == [0, 2, 1]  # D (0.0677 -> 0.0341 after B) falls under 0.05


def test_naive_is_hard_nms():
    keep, scores = soft_nms(BOXES, SCORES, iou_threshold=0.5, method="naive")
    assert keep.tolist() == [0, 2]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7]))


def test_mmcv_docstring_example():
    """mmcv's own example: degenerate boxes (0/0 IoU is NaN, which decays nothing), a score of
    0 dropped as soon as it is decayed, ties kept in order."""
    boxes = torch.tensor([[4, 3, 5, 3], [4, 3, 5, 4]] + [[3, 1, 3, 1]] * 4, dtype=torch.float32)
    scores = torch.tensor([0.9, 0.9, 0.5, 0.5, 0.4, 0.0])
    keep, new = soft_nms(boxes, scores, iou_threshold=0.6, sigma=0.5)
    assert keep.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(new, scores[:5])


@pytest.mark.parametrize("method", ["linear", "gaussian", "naive"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_kernel_transcription(method, seed):
    """Many overlapping boxes with tied scores (two decimals): the swap-with-last order decides
    the ties, so the kept order and scores must match the kernel exactly."""
    rng = np.random.default_rng(seed)
    n = 60
    xy = rng.uniform(0, 40, (n, 2))
    wh = rng.uniform(5, 25, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, n), 2).astype(np.float32)
    thr, min_score = 0.3, 0.05
    keep, new = soft_nms(
        torch.from_numpy(boxes),
        torch.from_numpy(scores),
        iou_threshold=thr,
        sigma=0.5,
        min_score=min_score,
        method=method,
    )
    ref_keep, ref_scores = _kernel_reference(boxes, scores, thr, 0.5, min_score, method)
    assert keep.tolist() == ref_keep
    assert new.tolist() == pytest.approx(ref_scores, rel=1e-6)
    assert 0 < len(ref_keep) < n  # the case exercises removals


def test_batched_groups_do_not_suppress_each_other():
    boxes = torch.tensor([A, A, A], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.6])
    keep, new = batched_soft_nms(boxes, scores, torch.tensor([0, 1, 0]))
    # box 1 is alone in its class: untouched; box 2 (IoU 1 with box 0, same class) dropped
    assert keep.tolist() == [0, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.8]))
    keep, _ = batched_soft_nms(boxes, scores, torch.tensor([0, 0, 0]))
    assert keep.tolist() == [0]
    keep, new = batched_soft_nms(boxes, scores, torch.tensor([0, 1, 2]), max_dets=2)
    assert keep.tolist() == [0, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.8]))


def test_batched_equals_one_nms_per_group():
    rng = np.random.default_rng(3)
    n = 200
    xy = rng.uniform(0, 100, (n, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1)).float()
    scores = torch.tensor(rng.uniform(0, 1, n)).float()
    labels = torch.tensor(rng.integers(0, 4, n))
    keep, new = batched_soft_nms(boxes, scores, labels, iou_threshold=0.5, max_dets=100)
    by_group = {}
    for g in range(4):
        members = (labels == g).nonzero().view(-1)
        k, s = soft_nms(boxes[members], scores[members], iou_threshold=0.5)
        by_group.update(zip(members[k].tolist(), s.tolist()))
    assert len(keep) == 100
    assert (new[:-1] >= new[1:]).all()
    expected = sorted(by_group.items(), key=lambda kv: -kv[1])[:100]
    assert keep.tolist() == [k for k, _ in expected]
    assert new.tolist() == pytest.approx([s for _, s in expected], rel=1e-6)


def test_empty_and_bad_input():
    keep, new = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == (0,) and keep.dtype == torch.long and new.shape == (0,)
    no_groups = torch.zeros(0, dtype=torch.long)
    keep, new = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), no_groups)
    assert keep.numel() == 0 and new.numel() == 0
    keep, new = soft_nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.0]))
    assert keep.tolist() == [0] and new.tolist() == [0.0]  # the selected box is never tested
    with pytest.raises(ValueError, match="boxes"):
        soft_nms(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="scores"):
        soft_nms(torch.zeros(3, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="method"):
        soft_nms(torch.zeros(3, 4), torch.zeros(3), method="hard")
    with pytest.raises(ValueError, match="integer"):
        batched_soft_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3))
