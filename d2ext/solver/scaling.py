"""Values derived from the batch size, as functions a config ``LazyCall``s with
``batch_size="${dataloader.train.total_batch_size}"`` so that a batch-size override (command
line or code) updates them when the config is instantiated."""

__all__ = ["epochs_to_iters", "linear_scaled_lr"]


def linear_scaled_lr(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``base_lr x batch_size / base_batch_size``.

    Args:
        base_lr: the learning rate at ``base_batch_size`` images per iteration.
        batch_size: the total batch size (images per iteration over all workers).
        base_batch_size: the batch size ``base_lr`` is given for.

    Returns:
        the learning rate at ``batch_size``.
    """
    if batch_size <= 0 or base_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive, got {batch_size} / {base_batch_size}")
    return base_lr * batch_size / base_batch_size


def epochs_to_iters(epochs: float, num_images: int, batch_size: int) -> int:
    """Iterations that cover ``epochs`` passes over ``num_images`` images.

    Args:
        epochs: passes over the data (may be fractional).
        num_images: images in one pass.
        batch_size: the total batch size.

    Returns:
        ``epochs x num_images // batch_size`` (rounded down).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return int(epochs * num_images) // batch_size
