"""Pretraining checkpoint -> Detectron2 detector checkpoint (SoCo, AlignDet).

A self-supervised pretraining run saves the online network under its own module names, next to
parts that have no place in a detector (target network, projector, predictor). Conversion maps
the kept prefixes onto the detector's names, drops everything else, and by default also drops
the detector's final classification / regression layers (their pretraining versions predict
embeddings or pseudo boxes, not the target classes), so fine-tuning starts them fresh.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from d2ext.utils.io import atomic_write

__all__ = [
    "DEFAULT_PREDICTOR_PATTERNS",
    "ConversionReport",
    "compare_with_model",
    "convert_state_dict",
    "save_detectron2_checkpoint",
]

# The last layers of detectron2's detectors, in detectron2's module names.
DEFAULT_PREDICTOR_PATTERNS = (
    r"^roi_heads\.box_predictor\.",  # Fast/Faster/Mask R-CNN cls_score, bbox_pred
    r"^roi_heads\.box_predictor\.\d+\.",  # cascade stages
    r"^head\.cls_score\.",  # RetinaNet, FCOS
    r"^head\.bbox_pred\.",
    r"^head\.ctrness\.",  # FCOS centerness
    r"^transformer\.class_embed\.\d+\.",  # d2ext's Deformable DETR: every classifier
    r"^transformer\.bbox_embed\.\d+\.layers\.2\.",  # and the last layer of each box MLP
)


@dataclass
class ConversionReport:
    converted: list[tuple[str, str]] = field(default_factory=list)  # (source key, new key)
    dropped_predictors: list[str] = field(default_factory=list)  # new keys dropped
    unused: list[str] = field(default_factory=list)  # source keys matching no prefix

    def summary(self) -> str:
        return (
            f"{len(self.converted)} tensors converted, {len(self.dropped_predictors)} predictor "
            f"tensors dropped, {len(self.unused)} source tensors unused"
        )


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    prefix_map: Sequence[tuple[str, str]],
    keep_predictors: bool = False,
    predictor_patterns: Sequence[str] = DEFAULT_PREDICTOR_PATTERNS,
    drop_source: Sequence[str] = (),
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Renames and filters a pretraining state dict.

    Args:
        state_dict: the pretraining model's tensors (a ``"model"`` entry of a checkpoint).
        prefix_map: ordered (source prefix, detector prefix) pairs; a key takes the first pair
            whose source prefix it starts with, and keys matching none are left out.
        keep_predictors: keep the detector's final classification / regression layers.
        predictor_patterns: regexes (on detector names) of those final layers.
        drop_source: source keys containing any of these strings are left out (reported as
            unused), e.g. AlignDet's "projector".

    Returns:
        (detector state dict, report).

    Raises:
        ValueError: when no key matches any prefix, or two keys map to one name.
    """
    report = ConversionReport()
    out: dict[str, torch.Tensor] = {}
    patterns = [re.compile(p) for p in predictor_patterns]
    for key, value in state_dict.items():
        if any(part in key for part in drop_source):
            report.unused.append(key)
            continue
        for src, dst in prefix_map:
            if key.startswith(src):
                new = dst + key[len(src) :]
                break
        else:
            report.unused.append(key)
            continue
        if not keep_predictors and any(p.search(new) for p in patterns):
            report.dropped_predictors.append(new)
            continue
        if new in out:
            raise ValueError(f"two source keys map to {new!r}; check the prefix map")
        out[new] = value
        report.converted.append((key, new))
    if not report.converted:
        raise ValueError(
            f"no key of the checkpoint starts with any of {[s for s, _ in prefix_map]}; "
            f"its keys look like {sorted(state_dict)[:5]}"
        )
    return out, report


def compare_with_model(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, list]:
    """What loading ``state_dict`` into ``model`` would do: keys loaded, missing from the
    checkpoint, unexpected by the model, and present in both with different shapes."""
    expected = model.state_dict()
    shape_mismatch = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    bad = {k for k, _, _ in shape_mismatch}
    return {
        "loaded": sorted(k for k in state_dict if k in expected and k not in bad),
        "missing": sorted(k for k in expected if k not in state_dict),
        "unexpected": sorted(k for k in state_dict if k not in expected),
        "shape_mismatch": shape_mismatch,
    }


def save_detectron2_checkpoint(path: str, state_dict: dict[str, torch.Tensor], **meta) -> None:
    """Writes ``{"model": state_dict, **meta}`` atomically, the layout DetectionCheckpointer
    loads with exact key matching (``matching_heuristics`` off)."""
    data = {"model": state_dict, "matching_heuristics": False, **meta}
    atomic_write(path, lambda f: torch.save(data, f))
