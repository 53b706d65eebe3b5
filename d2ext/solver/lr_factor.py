"""Per-parameter lr factors for detectron2's ``get_default_optimizer_params(lr_factor_func=)``."""

from __future__ import annotations

__all__ = ["PrefixLRFactor"]


def _as_tuple(x: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return (x,) if isinstance(x, str) else tuple(x)


class PrefixLRFactor:
    """``factor`` for parameters whose name starts with one of ``prefixes`` or contains one of
    ``contains``, 1 otherwise. The DETR family's backbone lr x0.1 is ``prefixes="backbone."``;
    Deformable DETR / Co-Deformable-DETR's authors also slow every ``sampling_offsets``
    (mmcv's ``custom_keys`` match a key anywhere in the parameter name), which is
    ``contains="sampling_offsets"``. A class, not a lambda, so configs stay serialisable.

    Args:
        prefixes: name prefixes that get ``factor``.
        factor: the lr factor.
        contains: name substrings that get ``factor``.
    """

    def __init__(
        self,
        prefixes: str | tuple[str, ...] | list[str] = "backbone.",
        factor: float = 0.1,
        contains: str | tuple[str, ...] | list[str] = (),
    ):
        self.prefixes = _as_tuple(prefixes)
        self.contains = _as_tuple(contains)
        self.factor = float(factor)

    def __call__(self, name: str) -> float:
        if name.startswith(self.prefixes) or any(c in name for c in self.contains):
            return self.factor
        return 1.0

    def __repr__(self) -> str:
        return (
            f"PrefixLRFactor(prefixes={self.prefixes}, factor={self.factor}, "
            f"contains={self.contains})"
        )
