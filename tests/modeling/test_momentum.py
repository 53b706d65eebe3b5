import math

import pytest
import torch
from detectron2.engine import HookBase, SimpleTrainer
from torch import nn

from d2ext.modeling import MomentumSchedule, cosine_momentum, make_target, momentum_update


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
    """online/target pair; with ``schedule`` the forward steps the EMA itself, without it the
    test applies the authors' update after each optimizer step (the reference)."""

    def __init__(self, schedule: bool, total_steps: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.online = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
        self.target = make_target(self.online)
        self.schedule = MomentumSchedule(0.9, total_steps) if schedule else None
        self.targets_used = []  # the target's weights each forward computed with

    def forward(self, data):
        if self.training and self.schedule is not None:
            self.schedule.step(self.online, self.target)
        self.targets_used.append([p.detach().clone() for p in self.target.parameters()])
        x = torch.stack(data)
        loss = (self.online(x) - self.target(x)).pow(2).mean() + self.online(x).mean()
        return {"loss": loss}


class _AfterStepUpdate(HookBase):
    """The reference: target update right after optimizer step k with m(k + 1)."""

    def after_step(self):
        m = cosine_momentum(0.9, self.trainer.iter + 1, self.trainer.max_iter)
        momentum_update(self.trainer.model.online, self.trainer.model.target, m)


def _data():
    g = torch.Generator().manual_seed(1)
    return iter(lambda: list(torch.randn(4, 2, generator=g)), None)


def _train(model, start, stop, hooks=()):
    trainer = SimpleTrainer(model, _data(), torch.optim.SGD(model.online.parameters(), lr=0.1))
    trainer.register_hooks(list(hooks))
    trainer.train(start, stop)
    return trainer


def test_update_in_forward_equals_an_update_after_each_step():
    ours, ref = _Toy(schedule=True), _Toy(schedule=False)
    trainer = _train(ours, 0, 6)
    _train(ref, 0, 6, [_AfterStepUpdate()])
    # every forward computed its loss with the same target weights as the reference
    assert len(ours.targets_used) == len(ref.targets_used) == 6
    for a, b in zip(ours.targets_used, ref.targets_used):
        for pa, pb in zip(a, b):
            torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert not torch.equal(ours.targets_used[0][0], ours.targets_used[-1][0])  # it moved
    # the momenta of the updates, k = 1..5, went to the event storage
    logged = [v for v, _ in trainer.storage.history("momentum").values()]
    assert logged == pytest.approx([cosine_momentum(0.9, k, 6) for k in range(1, 6)])
    assert int(ours.schedule.iteration) == 6
    # after N steps the reference has applied one more update (the one after the last step);
    # the next training forward applies it here: then the targets are equal
    from detectron2.utils.events import EventStorage

    with EventStorage(6):
        ours.schedule.step(ours.online, ours.target)
    for pa, pb in zip(ours.target.parameters(), ref.target.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_the_step_counter_is_checkpointed_and_a_resumed_run_continues_the_schedule():
    full = _Toy(schedule=True)
    _train(full, 0, 6)
    first = _Toy(schedule=True)
    _train(first, 0, 3)
    state = first.state_dict()
    assert int(state["schedule.iteration"]) == 3
    resumed = _Toy(schedule=True)
    resumed.load_state_dict(state)
    # the data iterator restarts in this toy, so compare the schedule, not the weights
    trainer = _train(resumed, 3, 6)
    logged = [v for v, _ in trainer.storage.history("momentum").values()]
    assert logged == pytest.approx([cosine_momentum(0.9, k, 6) for k in (3, 4, 5)])


def test_training_without_total_steps_raises():
    schedule = MomentumSchedule(0.99, None)
    with pytest.raises(ValueError, match="total_steps"):
        schedule.step(nn.Linear(1, 1), nn.Linear(1, 1))
    with pytest.raises(ValueError, match="positive"):
        MomentumSchedule(0.99, 0)
