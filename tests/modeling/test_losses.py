"""d2ext.modeling.losses: Quality Focal Loss against a hand computation and a per-element loop,
and the aligned IoU used for Co-DINO's quality targets."""

import math

import pytest
import torch

from d2ext.modeling.losses import aligned_box_iou, quality_focal_loss


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _bce(x: float, t: float) -> float:
    p = _sigmoid(x)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _reference(logits, classes, scores, beta):
    """mmdetection's quality_focal_loss written element by element: every element a negative
    scaled by p^beta, then each positive's own class replaced by BCE(p, s) * |s - p|^beta."""
    n, k = logits.shape
    out = torch.zeros(n, k, dtype=torch.float64)
    for i in range(n):
        for c in range(k):
            x = float(logits[i, c])
            p = _sigmoid(x)
            out[i, c] = _bce(x, 0.0) * p**beta
        label = int(classes[i])
        if 0 <= label < k:
            x, s = float(logits[i, label]), float(scores[i])
            out[i, label] = _bce(x, s) * abs(s - _sigmoid(x)) ** beta
    return out


def test_hand_computation():
    # prediction 0: positive of class 1 with quality 0.6; prediction 1: background (class 2 = K)
    logits = torch.tensor([[0.0, 1.0], [-2.0, 0.5]], dtype=torch.float64)
    classes = torch.tensor([1, 2])
    scores = torch.tensor([0.6, 0.9], dtype=torch.float64)  # 0.9 is ignored: background
    p = [[0.5, _sigmoid(1.0)], [_sigmoid(-2.0), _sigmoid(0.5)]]
    expected = [
        [-math.log(1 - 0.5) * 0.5**2, _bce(1.0, 0.6) * abs(0.6 - p[0][1]) ** 2],
        [-math.log(1 - p[1][0]) * p[1][0] ** 2, -math.log(1 - p[1][1]) * p[1][1] ** 2],
    ]
    got = quality_focal_loss(logits, classes, scores, beta=2.0, reduction="none")
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    total = quality_focal_loss(logits, classes, scores)  # default reduction "sum"
    assert total.item() == pytest.approx(sum(map(sum, expected)), rel=1e-12)
    mean = quality_focal_loss(logits, classes, scores, reduction="mean")
    assert mean.item() == pytest.approx(sum(map(sum, expected)) / 4, rel=1e-12)


def test_a_perfect_quality_prediction_costs_nothing_at_its_class():
    # p == s at the positive: |s - p|^beta = 0, whatever BCE(p, s) is
    s = 0.7
    logit = math.log(s / (1 - s))
    loss = quality_focal_loss(
        torch.tensor([[logit, -30.0]], dtype=torch.float64),
        torch.tensor([0]),
        torch.tensor([s], dtype=torch.float64),
        reduction="none",
    )
    assert loss[0, 0].item() == pytest.approx(0.0, abs=1e-20)
    assert 0 < loss[0, 1].item() < 1e-20  # a confident negative: p^2 * BCE, tiny but not zero


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
def test_matches_the_element_loop(beta):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 3
    classes = torch.randint(-1, 9, (3, 5), generator=g)  # -1 and 7, 8 are background
    scores = torch.rand(3, 5, generator=g, dtype=torch.float64)
    got = quality_focal_loss(logits, classes, scores, beta=beta, reduction="none")
    expected = _reference(logits.view(-1, 7), classes.view(-1), scores.view(-1), beta)
    torch.testing.assert_close(got.view(-1, 7), expected)
    weight = torch.rand(3, 5, generator=g, dtype=torch.float64)
    weighted = quality_focal_loss(logits, classes, scores, beta=beta, weight=weight)
    assert weighted.item() == pytest.approx((expected * weight.view(-1, 1)).sum().item(), rel=1e-10)


def test_gradients_are_finite_and_flow_through_the_modulating_factor():
    logits = torch.tensor([[40.0, -40.0, 0.3], [-50.0, 60.0, 0.0]], requires_grad=True)
    classes = torch.tensor([1, 3])
    scores = torch.tensor([0.0, 1.0])
    quality_focal_loss(logits, classes, scores).backward()
    assert torch.isfinite(logits.grad).all()
    # d/dx [BCE(x, 0) * sigmoid(x)^2] = p^3 + 2 p^2 (1 - p) * (-log(1 - p)) > p^3 at x = 0.3:
    # the factor's own gradient is included (mmdetection does not detach it)
    x = 0.3
    p = _sigmoid(x)
    full = p**3 + 2 * p**2 * (1 - p) * (-math.log(1 - p))
    assert logits.grad[0, 2].item() == pytest.approx(full, rel=1e-5)


def test_float64_gradcheck():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    classes = torch.tensor([0, 2, 3, 1])
    scores = torch.rand(4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: quality_focal_loss(x, classes, scores, reduction="none"), (logits,)
    )


def test_empty_and_bad_inputs():
    empty = quality_focal_loss(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        quality_focal_loss(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="integer"):
        quality_focal_loss(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="reduction"):
        quality_focal_loss(
            torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), torch.zeros(2), reduction="avg"
        )


def test_aligned_box_iou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]])
    torch.testing.assert_close(
        aligned_box_iou(a, b, box_format="xyxy"), torch.tensor([1 / 7, 1.0, 0.0])
    )
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    shifted = torch.tensor([[0.55, 0.5, 0.2, 0.4]])  # overlap 0.15 x 0.4 of two 0.2 x 0.4 boxes
    assert aligned_box_iou(cxcywh, shifted).item() == pytest.approx(0.06 / (0.16 - 0.06))
    zero = torch.zeros(1, 4)
    assert aligned_box_iou(zero, zero, box_format="xyxy").item() == 0.0  # union floored at eps
