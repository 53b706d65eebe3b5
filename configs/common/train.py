"""Training defaults for tools/train_net.py: detectron2's, plus d2ext's options."""

import torch
from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
train.update(
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=0,
    clip_grad_norm=0.0,  # > 0: clip the global gradient norm (engine.GradientClipHook)
    extra_hooks=[],  # LazyCall'd HookBase objects a recipe adds (momentum update, ...)
)
