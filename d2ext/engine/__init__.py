"""The training loop and hooks."""

from .train_loop import build_trainer, do_test, do_train, main, setup_config

__all__ = ["build_trainer", "do_test", "do_train", "main", "setup_config"]
