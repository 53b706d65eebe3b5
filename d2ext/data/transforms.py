"""Augmentations detectron2 does not have."""

from collections.abc import Sequence

import numpy as np
from detectron2.data import transforms as T

__all__ = ["RandomChoice", "random_colour_op"]


class RandomChoice(T.Augmentation):
    """Applies one of ``augmentations``, drawn uniformly (numpy's RNG, like detectron2's)."""

    def __init__(self, augmentations: Sequence[T.Augmentation]):
        super().__init__()
        if not augmentations:
            raise ValueError("RandomChoice needs at least one augmentation")
        self.augmentations = list(augmentations)

    def get_transform(self, *args):
        return self.augmentations[np.random.randint(len(self.augmentations))].get_transform(*args)

    def __call__(self, aug_input):
        return self.augmentations[np.random.randint(len(self.augmentations))](aug_input)


def random_colour_op(strength: float = 0.4) -> RandomChoice:
    """One random photometric operation per image: brightness, contrast or saturation scaled by
    a factor in [1 - strength, 1 + strength] (AlignDet: one random colour operation per view)."""
    lo, hi = 1.0 - strength, 1.0 + strength
    return RandomChoice(
        [T.RandomBrightness(lo, hi), T.RandomContrast(lo, hi), T.RandomSaturation(lo, hi)]
    )
