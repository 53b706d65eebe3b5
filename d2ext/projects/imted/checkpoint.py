"""Loading an official MAE *full* checkpoint (encoder + decoder) into imTED."""

import math
import os

import torch
import torch.nn.functional as F

from d2ext.checkpoint import (
    ConversionReport,
    Transformed,
    convert_checkpoint,
    load_checkpoint,
)

__all__ = [
    "MAE_TO_IMTED",
    "MAEMappingReport",
    "MODULATOR_WEIGHT",
    "fewshot_init_from_base",
    "mae_to_imted",
    "modulator_weight",
]

# official MAE key prefix -> imTED (detectron2) key prefix; first match wins
MAE_TO_IMTED = (
    ("cls_token", "backbone.net.cls_token"),
    ("pos_embed", "backbone.net.pos_embed"),
    ("patch_embed.", "backbone.net.patch_embed."),
    ("blocks.", "backbone.net.blocks."),
    ("norm.", "roi_heads.box_head.norm."),  # the encoder's final norm opens the box head
    ("decoder_embed.", "roi_heads.box_head.decoder_embed."),
    ("decoder_blocks.", "roi_heads.box_head.decoder_blocks."),
    # the decoder's 14x14 table: the head resizes it to the RoI grid (imTED's)
    ("decoder_pos_embed", "roi_heads.box_head.decoder_pos_embed"),
    # loaded only into a head built with pretrained_final_norm=True; imTED's head has a fresh
    # decoder_box_norm instead
    ("decoder_norm.", "roi_heads.box_head.decoder_norm."),
)
# used by MAE pretraining only: mask token and the pixel predictor
MAE_UNUSED = ("mask_token", "decoder_pred.")
# mapped only when the model has the target (else reported as unused): the cls token (an
# encoder without keep_cls_token), the decoder table (a head with pos_embed="sincos"), MAE's
# decoder_norm (imTED's head, whose last LN is a fresh decoder_box_norm)
MAE_OPTIONAL = ("cls_token", "decoder_pos_embed", "decoder_norm.")


MAEMappingReport = ConversionReport
"""imTED's earlier report type: the one report of :func:`d2ext.checkpoint.convert_checkpoint`."""


def _resize_pos(pos: torch.Tensor, num_positions: int) -> torch.Tensor:
    """[1, 1 + g*g, C] -> [1, 1 + G*G, C] (bicubic on the grid, cls position kept)."""
    cls, grid = pos[:, :1], pos[:, 1:]
    g, big = int(grid.shape[1] ** 0.5), int((num_positions - 1) ** 0.5)
    if g * g != grid.shape[1] or big * big != num_positions - 1:
        raise ValueError(f"position embedding of {pos.shape[1]} positions is not 1 + a square")
    grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(big, big), mode="bicubic", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, big * big, -1).to(pos.dtype)], 1)


def _mae_transform(src: str, new: str, value, expected) -> Transformed | None:
    """imTED's special keys (the ``transform`` of :func:`mae_to_imted`): the encoder's position
    embedding resized to the model's grid; a decoder table of another grid reported with the
    ``pretrain_grid`` that fits it."""
    if expected is None or value.shape == expected.shape:
        return None
    if src == "pos_embed":
        return Transformed(_resize_pos(value, expected.shape[1]), interpolated=True)
    if src == "decoder_pos_embed" and value.shape[-1] == expected.shape[-1]:
        grid = math.isqrt(value.shape[1] - 1)
        return Transformed(value, note=f"build the box head with pretrain_grid={grid}")
    return None


def mae_to_imted(
    checkpoint, model: torch.nn.Module | None = None, load_decoder: bool = True, **convert_kwargs
) -> tuple[dict, ConversionReport]:
    """Maps an official MAE full checkpoint onto imTED's keys, through
    :func:`d2ext.checkpoint.convert_checkpoint`.

    Args:
        checkpoint: the loaded file (``{"model": state_dict}`` as MAE saves it, or a bare
            state dict), or its path (read with :func:`d2ext.checkpoint.load_checkpoint`, which
            runs no code from it; ``unsafe=True`` in ``convert_kwargs`` for a trusted file).
        model: the imTED detector; when given, shapes are checked, the encoder's position
            embedding is interpolated to its grid, keys of :data:`MAE_OPTIONAL` the model has
            no place for are reported as unused, and ``missing`` lists its encoder / box-head
            keys the checkpoint does not fill (the fresh ``decoder_box_norm`` excepted).
            Without a model, ``decoder_norm.*`` is reported as unused (imTED's head).
        load_decoder: False maps the encoder only (imTED's "encoder-only" baseline: box head
            randomly initialised).
        convert_kwargs: passed to :func:`~d2ext.checkpoint.convert_checkpoint` (``dst``,
            ``fail_on``, ``meta``, ``progress``, ``unsafe``).

    Returns:
        (state dict for ``model.load_state_dict(..., strict=False)``, report).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_checkpoint(
            checkpoint,
            unsafe=convert_kwargs.pop("unsafe", False),
            progress=convert_kwargs.get("progress", False),
        )
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError("not a checkpoint: expected a state dict, or one under 'model'")
    keys = list(state)
    if not any(k.startswith("blocks.") for k in keys) or "patch_embed.proj.weight" not in state:
        sample = keys[:5]
        raise ValueError(
            "not an MAE checkpoint in the official layout (expected top-level 'blocks.N.', "
            f"'patch_embed.proj.weight', 'decoder_blocks.N.'...); its first keys are {sample}. "
            "A detectron2 or timm checkpoint needs its own converter."
        )
    has_decoder = any(k.startswith("decoder_blocks.") for k in keys)
    if load_decoder and not has_decoder:
        raise ValueError(
            "the checkpoint has no decoder ('decoder_blocks.N.'): it is an encoder-only MAE "
            "release; imTED needs the full one (or pass load_decoder=False for the baseline)"
        )
    unused = MAE_UNUSED + (("decoder_norm.",) if model is None else ())
    kept = [(s, d) for s, d in MAE_TO_IMTED if load_decoder or not d.startswith("roi_heads.")]
    prefix_map = [(s, None) for s in unused] + [
        (s, d if (s, d) in kept else None) for s, d in MAE_TO_IMTED
    ]
    return convert_checkpoint(
        state,
        prefix_map,
        model=model,
        keep_predictors=True,  # no detector predictor comes from MAE
        unmatched="unexpected",
        optional=MAE_OPTIONAL,
        transform=_mae_transform,
        missing_within=[d for _, d in kept],
        fresh=("roi_heads.box_head.decoder_box_norm.",),  # imTED's: not in any MAE checkpoint
        **convert_kwargs,
    )


def fewshot_init_from_base(
    base_state: dict,
    model: torch.nn.Module,
    base_classes,
    all_classes,
    predictor: str = "roi_heads.box_predictor.",
) -> dict:
    """The start of imTED's few-shot fine-tuning (the authors' ``mmdet/apis/train.py:92-107``):
    the base model's weights, with a classifier for all classes that keeps the base classes'
    rows and the background row from the base model and the freshly initialised rows of
    ``model`` for the novel classes. The box regressor (class-specific, another shape) is left
    out, so the fine-tuning model keeps its fresh one, as the authors' shape check does. Rows
    are matched by class name, so the two class orders may differ.

    Args:
        base_state: the base model's state dict (or ``{"model": state_dict}``).
        model: the fine-tuning detector, freshly built (its classifier supplies the novel rows).
        base_classes: the base model's class names, in its order.
        all_classes: the fine-tuning model's class names, in its order.
        predictor: the box predictor's key prefix.

    Returns:
        a state dict to save as ``{"model": ...}`` and use as ``train.init_checkpoint``.
    """
    state = base_state.get("model", base_state)
    missing = [c for c in base_classes if c not in all_classes]
    if missing:
        raise ValueError(f"base classes not among all classes: {missing[:5]}")
    fresh = model.state_dict()
    out = {}
    for k, v in state.items():
        if k.startswith(predictor + "bbox_pred."):
            continue  # class-specific regressor: fresh, as the authors'
        if k.startswith(predictor + "cls_score."):
            if v.shape[0] != len(base_classes) + 1:
                raise ValueError(
                    f"{k} has {v.shape[0]} rows; expected {len(base_classes)} base classes + "
                    "background"
                )
            new = fresh[k].clone()
            rows = torch.tensor([list(all_classes).index(c) for c in base_classes])
            new[rows] = v[: len(base_classes)].to(new.dtype)
            new[-1] = v[-1].to(new.dtype)  # background, last in detectron2 as in mmdet
            v = new
        out[k] = v
    return out


# the per-channel weight of imTED's MultiScaleFeatureModulator in a detector's state dict
MODULATOR_WEIGHT = "roi_heads.box_pooler.modulator.weight"


def modulator_weight(checkpoint, key: str = MODULATOR_WEIGHT, unsafe: bool = False) -> torch.Tensor:
    """The multi-scale feature modulator's per-channel weight in a trained imTED detector
    (zero at initialisation; what training made of it).

    Args:
        checkpoint: a detector checkpoint file (read with
            :func:`d2ext.checkpoint.load_checkpoint`, which runs no code from it), a loaded
            checkpoint (``{"model": state_dict, ...}``) or a state dict.
        key: the weight's name in the state dict.
        unsafe: read a file without restrictions (only for a trusted file).

    Returns:
        Tensor: [C_enc] the weight, as float32 on the CPU.

    Raises:
        KeyError: the checkpoint has no such key (a detector without the modulator).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_checkpoint(checkpoint, unsafe=unsafe)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError("not a checkpoint: expected a state dict, or one under 'model'")
    if key not in state:
        near = sorted(k for k in state if "modulator" in k)[:5]
        raise KeyError(
            f"{key!r} is not in the checkpoint (a detector without imTED's modulator?); "
            f"its modulator keys: {near or 'none'}"
        )
    return torch.as_tensor(state[key]).detach().float().cpu()
