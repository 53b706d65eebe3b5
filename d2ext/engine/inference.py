"""A LazyConfig's trained model outside the training loop, for the tools that draw its
predictions or analyse it: the config's test dataset, the model with its weights, and how the
config's test mapper prepares an image."""

__all__ = ["build_loaded_model", "config_test_dataset", "config_test_inputs"]


def config_test_dataset(cfg) -> str | None:
    """The first of the config's ``dataloader.test.dataset.names`` (None when it has none)."""
    names = cfg.get("dataloader", {}).get("test", {}).get("dataset", {}).get("names")
    if names is None or isinstance(names, str):
        return names
    return names[0] if len(names) else None


def build_loaded_model(cfg, checkpoint: str, device: str | None = None):
    """Builds ``cfg.model`` in eval mode and loads ``checkpoint`` with
    :class:`~d2ext.checkpoint.D2extCheckpointer` (safe loading).

    Args:
        cfg: a LazyConfig.
        checkpoint: the weights to load.
        device: default: the config's ``train.device``, else "cpu".

    Returns:
        (model, device).
    """
    from detectron2.config import instantiate

    from d2ext.checkpoint import D2extCheckpointer

    device = device or cfg.get("train", {}).get("device", "cpu")
    model = instantiate(cfg.model).to(device).eval()
    D2extCheckpointer(model).load(checkpoint)
    return model, device


def config_test_inputs(cfg, model) -> tuple[list, str]:
    """How the config's test mapper prepares an image for ``model``.

    Returns:
        (the instantiated ``dataloader.test.mapper.augmentations``, empty if none; the mapper's
        ``image_format``, else the model's ``input_format``, else "BGR").
    """
    from detectron2.config import instantiate

    mapper = cfg.get("dataloader", {}).get("test", {}).get("mapper", {})
    augs = mapper.get("augmentations")
    augmentations = list(instantiate(augs)) if augs is not None else []
    return augmentations, mapper.get("image_format", getattr(model, "input_format", "BGR"))
