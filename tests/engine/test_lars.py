import pytest
import torch
from torch import nn

from d2ext.solver import LARS, lars_param_groups


def test_one_step_matches_the_formula():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [
            {"params": [w], "weight_decay": 0.1},
            {"params": [b], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=0.5,
        momentum=0.9,
        trust_coefficient=0.01,
    )
    w.grad = torch.tensor([[0.0, 2.0]])
    b.grad = torch.tensor([2.0])
    opt.step()
    d = torch.tensor([[0.3, 2.4]])  # g + 0.1 * w
    q = 0.01 * 5.0 / d.norm()
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.5 * q * d)
    torch.testing.assert_close(b.detach(), torch.tensor([0.0]))  # plain SGD step, no decay
    # second step: momentum accumulates the (excluded) bias update
    b.grad = torch.tensor([2.0])
    w.grad = None
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([0.0 - 0.5 * (0.9 * 2.0 + 2.0)]))


def test_param_groups_exclude_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    groups = lars_param_groups(model, weight_decay=1e-5)
    assert [len(g["params"]) for g in groups] == [2, 4]
    assert groups[1]["lars_exclude"] and groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError):
        LARS(model.parameters(), lr=-1.0)


def test_config_block_follows_weight_decay_override():
    import os

    from detectron2.config import LazyConfig, instantiate

    from ..helpers import REPO

    cfg = LazyConfig.load(os.path.join(REPO, "configs/common/optim.py"))
    cfg.LARS.params.model = nn.Linear(3, 2)
    cfg.LARS.weight_decay = 0.5
    opt = instantiate(cfg.LARS)
    assert isinstance(opt, LARS)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
