"""Layer-wise lr decay for a ViT backbone as a serialisable lr factor (Co-DINO ViT-L's
``LayerDecayOptimizerConstructor(num_layers=24, layer_decay_rate=0.8)``)."""

from __future__ import annotations

from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

__all__ = ["ViTLayerDecayLRFactor"]


class ViTLayerDecayLRFactor:
    """``lr_decay_rate ** (num_layers + 1 - layer_id)`` per parameter name: layer 0 for the patch
    and position embeddings, i + 1 for ViT block i, ``num_layers + 1`` (factor 1) for every
    parameter outside the ViT (detectron2's ``get_vit_lr_decay_rate`` on names under
    ``backbone.``). A class, not a ``functools.partial``, so configs stay serialisable.

    Args:
        num_layers: the ViT's blocks.
        lr_decay_rate: the decay per block.
    """

    def __init__(self, num_layers: int = 24, lr_decay_rate: float = 0.8):
        if num_layers < 1 or not 0 < lr_decay_rate <= 1:
            raise ValueError(
                f"need num_layers >= 1 and 0 < lr_decay_rate <= 1, got {num_layers}, "
                f"{lr_decay_rate}"
            )
        self.num_layers, self.lr_decay_rate = num_layers, lr_decay_rate

    def __call__(self, name: str) -> float:
        return get_vit_lr_decay_rate(name, self.lr_decay_rate, self.num_layers)

    def __repr__(self) -> str:
        return (
            f"ViTLayerDecayLRFactor(num_layers={self.num_layers}, "
            f"lr_decay_rate={self.lr_decay_rate})"
        )
