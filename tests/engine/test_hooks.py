import pytest
import torch
from detectron2.engine import SimpleTrainer
from torch import nn

from d2ext.engine import GradientClipHook


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, data):
        return {"loss": (self.w * torch.tensor([300.0, 400.0, 0.0])).sum()}  # grad norm 500


def test_gradient_clip_bounds_the_applied_update():
    model = _Toy()
    trainer = SimpleTrainer(
        model, iter(lambda: [0], None), torch.optim.SGD(model.parameters(), lr=1.0)
    )
    trainer.register_hooks([GradientClipHook(1.0)])
    trainer.train(0, 1)
    # SGD with lr 1 moves the weights by exactly the clipped gradient: norm 1, same direction
    torch.testing.assert_close(model.w.detach(), -torch.tensor([0.6, 0.8, 0.0]))
    assert trainer.storage.history("grad_norm").latest() == pytest.approx(500.0)
    with pytest.raises(ValueError):
        GradientClipHook(0.0)
