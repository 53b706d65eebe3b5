import math

import pytest
import torch
from detectron2.engine import SimpleTrainer
from torch import nn

from d2ext.modeling import MomentumUpdateHook, cosine_momentum, make_target, momentum_update


def test_cosine_schedule_endpoints_and_midpoint():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.996, 100, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 25, 100) == pytest.approx(
        1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2
    )
    with pytest.raises(ValueError):
        cosine_momentum(1.5, 0, 10)


def test_update_is_ema_of_parameters_only_and_copies_named_keys():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Embedding(5, 4))
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    t0 = {k: v.clone() for k, v in target.state_dict().items()}
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.fill_(7.0)  # a buffer: never averaged into the target
    momentum_update(online, target, 0.9, copy_keys=("2.weight",))
    o = dict(online.named_parameters())
    for name, p in target.named_parameters():
        if name == "2.weight":
            assert torch.equal(p, o[name])
        else:
            torch.testing.assert_close(p, 0.9 * t0[name] + 0.1 * o[name])
    assert torch.equal(target[1].running_mean, t0["1.running_mean"])
    with pytest.raises(ValueError, match="differ"):
        momentum_update(online, nn.Linear(3, 4), 0.9)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.online = nn.Linear(2, 1)
        self.target = make_target(self.online)
        self.seen = []

    def forward(self, data):
        x = torch.stack(data)
        return {"loss": (self.online(x) - self.target(x)).pow(2).mean() + self.online(x).mean()}

    def momentum_update(self, m):
        self.seen.append(m)
        momentum_update(self.online, self.target, m)


def test_hook_steps_the_schedule_each_iteration():
    model = _Toy()
    data = iter(lambda: [torch.ones(2), torch.zeros(2)], None)
    trainer = SimpleTrainer(model, data, torch.optim.SGD(model.online.parameters(), lr=0.1))
    trainer.register_hooks([MomentumUpdateHook(0.99)])
    trainer.train(0, 4)
    assert model.seen == pytest.approx([cosine_momentum(0.99, k, 4) for k in range(1, 5)])
    assert model.seen[-1] == pytest.approx(1.0)
    # the target moved toward the online network but is not equal to it
    assert not torch.equal(model.online.weight, model.target.weight)
