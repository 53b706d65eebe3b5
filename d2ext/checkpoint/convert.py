"""Checkpoint conversion: a checkpoint of one model -> a Detectron2 checkpoint of a detector.

One function, :func:`convert_checkpoint`, does every conversion d2ext has (SoCo and AlignDet
pretraining -> detector, an official MAE checkpoint -> imTED, ``tools/convert_pretrain.py``,
``tools/convert_mae.py``, the demos): it renames keys by prefix, lets a per-key hook transform
special tensors (e.g. resize a position embedding), compares the result with the target
detector, reports every key in one :class:`ConversionReport` and writes the Detectron2
checkpoint atomically.

A self-supervised pretraining run saves the online network under its own module names, next to
parts that have no place in a detector (target network, projector, predictor). Conversion maps
the kept prefixes onto the detector's names, drops everything else, and by default also drops
the detector's final classification / regression layers (their pretraining versions predict
embeddings or pseudo boxes, not the target classes), so fine-tuning starts them fresh.
"""

import contextlib
import dataclasses
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from d2ext.utils.io import atomic_write

from .safe_load import UnsafeCheckpointError, load_checkpoint

__all__ = [
    "DEFAULT_PREDICTOR_PATTERNS",
    "ConversionReport",
    "Transformed",
    "compare_with_model",
    "convert_checkpoint",
    "convert_state_dict",
    "exit_on_conversion_error",
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
    """Where every key of a conversion went. Source keys are the checkpoint's names, target
    keys the detector's.

    Attributes:
        converted: (source key, target key) of every tensor in the result.
        loaded: target keys of the result; with a model, the keys it takes at their shape.
        missing: with a model, its keys the result does not fill (only those under
            ``missing_within``, less those under ``fresh``).
        unexpected: source keys left out because they map to no key of the model, or (with
            ``unmatched="unexpected"``) match no prefix.
        unused: source keys left out by design: matching no prefix (``unmatched="unused"``),
            mapped to ``None``, containing a ``drop_source`` string, or ``optional`` keys the
            model has no place for.
        dropped_predictors: target keys of final layers left out (``keep_predictors=False``).
        shape_mismatch: ``"target key: checkpoint (shape) vs model (shape)"`` (with the
            ``transform``'s note, if any) of tensors left out because their shape differs from
            the model's.
        interpolated: target keys whose tensor a ``transform`` resized to the model's shape.
        compared: whether the result was compared with a model.
    """

    converted: list[tuple[str, str]] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    dropped_predictors: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    compared: bool = False

    def summary(self) -> str:
        """One line of counts."""
        text = (
            f"{len(self.converted)} tensors converted, {len(self.dropped_predictors)} predictor "
            f"tensors dropped, {len(self.unused)} source tensors unused"
        )
        if self.compared:
            text += (
                f"; against the model: {len(self.loaded)} loaded, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.shape_mismatch)} of another "
                f"shape, {len(self.interpolated)} interpolated"
            )
        elif self.unexpected:
            text += f", {len(self.unexpected)} unexpected"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (json-serialisable)."""
        return asdict(self)


class Transformed(NamedTuple):
    """What a ``transform`` hook of :func:`convert_checkpoint` returns for a key it changes.

    Attributes:
        value: the tensor to keep.
        interpolated: record the key in :attr:`ConversionReport.interpolated`.
        check_shape: compare ``value``'s shape with the model's (False for a tensor the model
            adopts at its own shape when loading).
        note: added to the key's shape-mismatch entry (e.g. how to build the model so that
            the shapes match).
    """

    value: Any
    interpolated: bool = False
    check_shape: bool = True
    note: str = ""


KeyTransform = Callable[[str, str, Any, Any], "Transformed | None"]


def _state_dict_of(checkpoint: Any) -> dict:
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(
            "the checkpoint holds no state dict (a dict of tensors, or one under 'model')"
        )
    return dict(state)


def convert_checkpoint(
    checkpoint: Any,
    prefix_map: Sequence[tuple[str, str | None]],
    *,
    model: nn.Module | None = None,
    dst: str | None = None,
    keep_predictors: bool = False,
    predictor_patterns: Sequence[str] = DEFAULT_PREDICTOR_PATTERNS,
    drop_source: Sequence[str] = (),
    unmatched: str = "unused",
    optional: Sequence[str] = (),
    transform: KeyTransform | None = None,
    missing_within: Sequence[str] | None = None,
    fresh: Sequence[str] = (),
    fail_on: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
    unsafe: bool = False,
    progress: bool = False,
) -> tuple[dict[str, Any], ConversionReport]:
    """Maps a checkpoint's keys onto a detector's, compares them with the detector, reports
    every key and (with ``dst``) writes the Detectron2 checkpoint.

    Args:
        checkpoint: a checkpoint file (read with :func:`~d2ext.checkpoint.load_checkpoint`,
            which runs no code from it), a loaded checkpoint (its ``"model"`` entry is used) or
            a state dict.
        prefix_map: ordered (source prefix, target prefix) pairs; a key takes the first pair
            whose source prefix it starts with. A target of ``None`` leaves the keys out as
            unused (parts not used by design).
        model: the target detector. When given, keys it lacks, or of another shape, are left
            out and reported, and its keys the result does not fill are reported as missing.
        dst: write ``{"model": result, "matching_heuristics": False, **meta}`` here
            (atomically), unless a field named in ``fail_on`` is non-empty.
        keep_predictors: keep the detector's final classification / regression layers.
        predictor_patterns: regexes (on target names) of those final layers.
        drop_source: source keys containing any of these strings are left out as unused
            (e.g. AlignDet's ``".projector."``).
        unmatched: where keys matching no prefix are reported: ``"unused"`` (a pretraining
            run's target network, projectors...) or ``"unexpected"`` (a checkpoint whose every
            key should have a place).
        optional: source prefixes mapped only when the model has the target key; otherwise
            reported as unused instead of unexpected.
        transform: ``transform(source_key, target_key, value, model_value)`` (``model_value``
            is None without a model or when the model lacks the key) returns None to keep the
            tensor as it is, or a :class:`Transformed` (e.g. a position embedding resized to
            the model's grid).
        missing_within: with a model, only its keys under these prefixes can be missing
            (default: all of them).
        fresh: with a model, its keys under these prefixes start fresh by design and are not
            reported as missing.
        fail_on: report fields (e.g. ``("unexpected", "shape_mismatch")``) that must be empty
            for ``dst`` to be written.
        meta: extra top-level entries of the written checkpoint.
        unsafe: read a ``checkpoint`` path without restrictions (only for a trusted file).
        progress: show progress bars with rate and ETA while reading and writing files.

    Returns:
        (the target state dict, the report).

    Raises:
        ValueError: no key matches any prefix, two keys map to one name, or a field named in
            ``fail_on`` is not empty.
        UnsafeCheckpointError: a ``checkpoint`` file holds objects a safe load does not build.
    """
    if unmatched not in ("unused", "unexpected"):
        raise ValueError(f"unmatched must be 'unused' or 'unexpected', got {unmatched!r}")
    fields = [f.name for f in dataclasses.fields(ConversionReport) if f.name != "compared"]
    if set(fail_on) - set(fields):
        raise ValueError(f"fail_on names {sorted(set(fail_on) - set(fields))}; fields: {fields}")
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_checkpoint(checkpoint, unsafe=unsafe, progress=progress)
    state = _state_dict_of(checkpoint)
    target = model.state_dict() if model is not None else None
    patterns = [re.compile(p) for p in predictor_patterns]
    optional = tuple(optional)
    report = ConversionReport(compared=target is not None)
    out: dict[str, Any] = {}
    matched = False
    for key, value in state.items():
        if any(part in key for part in drop_source):
            report.unused.append(key)
            continue
        pair = next(((s, d) for s, d in prefix_map if key.startswith(s)), None)
        if pair is None:
            getattr(report, unmatched).append(key)
            continue
        src_prefix, dst_prefix = pair
        if dst_prefix is None:
            report.unused.append(key)
            continue
        matched = True
        new = dst_prefix + key[len(src_prefix) :]
        if not keep_predictors and any(p.search(new) for p in patterns):
            report.dropped_predictors.append(new)
            continue
        expected = None
        if target is not None:
            if new not in target:
                (
                    report.unused if optional and key.startswith(optional) else report.unexpected
                ).append(key)
                continue
            expected = target[new]
        check_shape, note = True, ""
        if transform is not None:
            changed = transform(key, new, value, expected)
            if changed is not None:
                value, check_shape, note = changed.value, changed.check_shape, changed.note
                if changed.interpolated:
                    report.interpolated.append(new)
        if expected is not None and check_shape and tuple(value.shape) != tuple(expected.shape):
            entry = f"{new}: checkpoint {tuple(value.shape)} vs model {tuple(expected.shape)}"
            report.shape_mismatch.append(entry + (f" ({note})" if note else ""))
            continue
        if new in out:
            raise ValueError(f"two source keys map to {new!r}; check the prefix map")
        out[new] = value
        report.converted.append((key, new))
        report.loaded.append(new)
    if not matched:
        raise ValueError(
            f"no key of the checkpoint starts with any of "
            f"{[s for s, d in prefix_map if d is not None]}; its keys look like {sorted(state)[:5]}"
        )
    if target is not None:
        within = tuple(missing_within) if missing_within is not None else ("",)
        report.missing = [
            k
            for k in target
            if k not in out and k.startswith(within) and not (fresh and k.startswith(tuple(fresh)))
        ]
    failed = {f: getattr(report, f) for f in fail_on if getattr(report, f)}
    if failed:
        shown = {f: v[:5] for f, v in failed.items()}
        raise ValueError(
            f"the converted checkpoint does not fit the model ({report.summary()}): {shown}"
            + (f"; {dst} not written" if dst else "")
        )
    if dst is not None:
        save_detectron2_checkpoint(dst, out, progress=progress, **dict(meta or {}))
    return out, report


convert_state_dict = convert_checkpoint
"""The earlier name of :func:`convert_checkpoint` (the same function)."""


def compare_with_model(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, list]:
    """What loading ``state_dict`` into ``model`` would do (:func:`convert_checkpoint` with the
    identity map): keys loaded, missing from the checkpoint, unexpected by the model, and
    present in both with different shapes (``"key: checkpoint (shape) vs model (shape)"``)."""
    if not state_dict:
        return {"loaded": [], "missing": sorted(model.state_dict()), "unexpected": [],
                "shape_mismatch": []}  # fmt: skip
    _, rep = convert_checkpoint(state_dict, [("", "")], model=model, keep_predictors=True)
    return {
        "loaded": sorted(rep.loaded),
        "missing": sorted(rep.missing),
        "unexpected": sorted(rep.unexpected),
        "shape_mismatch": rep.shape_mismatch,
    }


def save_detectron2_checkpoint(
    path: str, state_dict: dict[str, torch.Tensor], *, progress: bool = False, **meta
) -> None:
    """Writes ``{"model": state_dict, **meta}`` atomically, the layout DetectionCheckpointer
    loads with exact key matching (``matching_heuristics`` off).

    Args:
        path: the file to write.
        state_dict: the detector's tensors.
        progress: show a progress bar (bytes written, rate, ETA) on stderr.
        meta: extra top-level entries.
    """
    data = {"model": state_dict, "matching_heuristics": False, **meta}
    if not progress:
        atomic_write(path, lambda f: torch.save(data, f))
        return
    from tqdm import tqdm

    total = sum(v.numel() * v.element_size() for v in state_dict.values() if torch.is_tensor(v))

    def write(f):
        desc = f"writing {os.path.basename(path)}"
        with tqdm.wrapattr(f, "write", total=total, desc=desc, unit="B", unit_scale=True,
                           unit_divisor=1024, miniters=1) as wrapped:  # fmt: skip
            torch.save(data, wrapped)

    atomic_write(path, write)


@contextlib.contextmanager
def exit_on_conversion_error(src: str):
    """Turns the errors of reading and converting checkpoint ``src`` into ``SystemExit`` with
    a one-line message (the command-line tools' way of failing)."""
    try:
        yield
    except UnsafeCheckpointError as e:
        raise SystemExit(str(e)) from e
    except ValueError as e:
        raise SystemExit(f"{src}: {e}") from e
    except (OSError, RuntimeError, EOFError, IndexError, pickle.UnpicklingError) as e:
        raise SystemExit(f"cannot read checkpoint {src!r}: {e}") from e
