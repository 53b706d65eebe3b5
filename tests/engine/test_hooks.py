"""Gradient clipping in ``optimizer.step()`` (d2ext.solver.with_gradient_clipping)."""

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.engine import SimpleTrainer
from torch import nn

from d2ext.solver import with_gradient_clipping

GRAD = torch.tensor([300.0, 400.0, 0.0])  # L2 norm 500


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.b = nn.Parameter(torch.zeros(3))
        self.frozen = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, data):
        return {"loss": (self.w * GRAD).sum() + (self.b * GRAD).sum()}


def test_full_model_clip_bounds_the_applied_update_in_a_detectron2_trainer():
    model = _Toy()
    optim = with_gradient_clipping(torch.optim.SGD(model.parameters(), lr=1.0), clip_value=1.0)
    assert isinstance(optim, torch.optim.SGD) and optim.gradient_clipping["clip_value"] == 1.0
    SimpleTrainer(model, iter(lambda: [0], None), optim).train(0, 1)
    # one norm over both parameters (500 * sqrt(2)), clipped to 1: each moves by GRAD / (500 r2)
    expected = -GRAD / (500.0 * 2**0.5)
    torch.testing.assert_close(model.w.detach(), expected)
    torch.testing.assert_close(model.b.detach(), expected)
    total = torch.cat([model.w.grad, model.b.grad]).norm()
    assert total == pytest.approx(1.0, rel=1e-5)  # the gradients themselves were clipped


def test_per_parameter_norm_and_value_clipping_are_detectron2s():
    model = _Toy()
    optim = with_gradient_clipping(
        torch.optim.SGD, params=model.parameters(), lr=1.0, clip_type="norm", clip_value=1.0
    )
    SimpleTrainer(model, iter(lambda: [0], None), optim).train(0, 1)
    torch.testing.assert_close(model.w.detach(), -GRAD / 500.0)  # each parameter to norm 1
    torch.testing.assert_close(model.b.detach(), -GRAD / 500.0)
    model = _Toy()
    optim = with_gradient_clipping(
        "torch.optim.SGD", params=model.parameters(), lr=1.0, clip_type="value", clip_value=2.0
    )
    SimpleTrainer(model, iter(lambda: [0], None), optim).train(0, 1)
    torch.testing.assert_close(model.w.detach(), -torch.tensor([2.0, 2.0, 0.0]))


def test_lazy_config_keeps_params_at_the_top_for_a_users_loop():
    """`cfg.optimizer.params.model = model` (detectron2's lazyconfig_train_net) still works."""
    from detectron2.solver import get_default_optimizer_params

    cfg = L(with_gradient_clipping)(
        optimizer=torch.optim.AdamW,
        params=L(get_default_optimizer_params)(base_lr="${..lr}"),
        lr=2e-4,
        weight_decay=1e-4,
        clip_value=0.1,
    )
    model = _Toy()
    cfg.params.model = model
    optim = instantiate(cfg)
    assert isinstance(optim, torch.optim.AdamW) and optim.defaults["lr"] == 2e-4
    assert sum(len(g["params"]) for g in optim.param_groups) == 2  # the frozen one is left out
    model(None)["loss"].backward()
    optim.step()
    assert torch.cat([model.w.grad, model.b.grad]).norm() == pytest.approx(0.1, rel=1e-5)


def test_grad_scaler_unscales_before_the_clip():
    model = _Toy()
    optim = with_gradient_clipping(torch.optim.SGD(model.parameters(), lr=1.0), clip_value=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(model(None)["loss"]).backward()
    scaler.step(optim)  # unscale_, then optimizer.step(): the bound is on the true gradients
    scaler.update()
    torch.testing.assert_close(model.w.detach(), -GRAD / (500.0 * 2**0.5))


def test_bad_settings_raise():
    sgd = torch.optim.SGD(_Toy().parameters(), lr=1.0)
    with pytest.raises(ValueError, match="positive"):
        with_gradient_clipping(sgd, clip_value=0.0)
    with pytest.raises(ValueError, match="clip_type"):
        with_gradient_clipping(sgd, clip_value=1.0, clip_type="l2")
    with pytest.raises(TypeError, match="instance"):
        with_gradient_clipping(sgd, clip_value=1.0, lr=0.1)
    with pytest.raises(TypeError, match="Optimizer"):
        with_gradient_clipping(nn.Linear, clip_value=1.0)
    with_gradient_clipping(sgd, clip_value=1.0)
    with pytest.raises(ValueError, match="already clips"):
        with_gradient_clipping(sgd, clip_value=1.0)
