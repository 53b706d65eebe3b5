"""Per-parameter lr factors for detectron2's ``get_default_optimizer_params(lr_factor_func=)``."""

from __future__ import annotations

__all__ = ["PrefixLRFactor"]


class PrefixLRFactor:
    """``factor`` for parameters whose name starts with one of ``prefixes``, 1 otherwise (the
    DETR family's backbone lr x0.1). A class, not a lambda, so configs stay serialisable."""

    def __init__(
        self, prefixes: str | tuple[str, ...] | list[str] = "backbone.", factor: float = 0.1
    ):
        self.prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
        self.factor = float(factor)

    def __call__(self, name: str) -> float:
        return self.factor if name.startswith(self.prefixes) else 1.0

    def __repr__(self) -> str:
        return f"PrefixLRFactor(prefixes={self.prefixes}, factor={self.factor})"
