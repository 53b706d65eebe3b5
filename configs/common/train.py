"""Training defaults for tools/train_net.py: detectron2's, plus d2ext's options."""

import torch
from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
train.update(
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=0,
    extra_hooks=[],  # LazyCall'd HookBase objects a recipe adds (momentum update, ...)
    # Checkpoints are read without running code from them (tensors, numpy arrays, plain data);
    # True unpickles without restrictions: only for files you trust.
    unsafe_load=False,
    # An output_dir holding checkpoints of an earlier run is refused without --resume; True
    # replaces that run instead.
    overwrite=False,
    # Loading init_checkpoint (or --eval-only's) must fill at least this share of the model's
    # parameter values, else training stops with the key report ...
    min_init_fraction=0.5,
    # ... unless the partial load is intended (e.g. a backbone-only initialisation).
    allow_partial_init=False,
)
