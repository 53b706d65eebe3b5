"""The training loop and hooks."""

from .hooks import GradientClipHook
from .train_loop import build_trainer, do_test, do_train, main, setup_config

__all__ = ["GradientClipHook", "build_trainer", "do_test", "do_train", "main", "setup_config"]
