"""Loading an official MAE *full* checkpoint (encoder + decoder) into imTED."""

import dataclasses
import math

import torch
import torch.nn.functional as F

__all__ = ["MAE_TO_IMTED", "MAEMappingReport", "fewshot_init_from_base", "mae_to_imted"]

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


@dataclasses.dataclass
class MAEMappingReport:
    loaded: list[str]  # detector keys filled from the checkpoint
    missing: list[str]  # detector keys (of the mapped modules) the checkpoint lacks
    unexpected: list[str]  # checkpoint keys that map nowhere
    unused: list[str]  # checkpoint keys imTED does not use by design
    shape_mismatch: list[str]  # mapped keys whose shapes differ (left out)
    interpolated: list[str]  # position embeddings resized to the model's grid

    def summary(self) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in dataclasses.asdict(self).items())


def _resize_pos(pos: torch.Tensor, num_positions: int) -> torch.Tensor:
    """[1, 1 + g*g, C] -> [1, 1 + G*G, C] (bicubic on the grid, cls position kept)."""
    cls, grid = pos[:, :1], pos[:, 1:]
    g, big = int(grid.shape[1] ** 0.5), int((num_positions - 1) ** 0.5)
    if g * g != grid.shape[1] or big * big != num_positions - 1:
        raise ValueError(f"position embedding of {pos.shape[1]} positions is not 1 + a square")
    grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(big, big), mode="bicubic", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, big * big, -1).to(pos.dtype)], 1)


def mae_to_imted(
    checkpoint: dict, model: torch.nn.Module | None = None, load_decoder: bool = True
) -> tuple[dict, MAEMappingReport]:
    """Maps an official MAE full checkpoint onto imTED's keys.

    Args:
        checkpoint: the loaded file (``{"model": state_dict}`` as MAE saves it, or a bare
            state dict).
        model: the imTED detector; when given, shapes are checked, the encoder's position
            embedding is interpolated to its grid, keys of :data:`MAE_OPTIONAL` the model has
            no place for are reported as unused, and ``missing`` lists its encoder / box-head
            keys the checkpoint does not fill (the fresh ``decoder_box_norm`` excepted).
            Without a model, ``decoder_norm.*`` is reported as unused (imTED's head).
        load_decoder: False maps the encoder only (imTED's "encoder-only" baseline: box head
            randomly initialised).

    Returns:
        (state dict for ``model.load_state_dict(..., strict=False)``, report).
    """
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
    target = model.state_dict() if model is not None else None
    out, rep = {}, MAEMappingReport([], [], [], [], [], [])
    for k, v in state.items():
        if k.startswith(MAE_UNUSED) or (model is None and k.startswith("decoder_norm.")):
            rep.unused.append(k)
            continue
        new = next((d + k[len(s) :] for s, d in MAE_TO_IMTED if k.startswith(s)), None)
        if new is None:
            rep.unexpected.append(k)
            continue
        if not load_decoder and new.startswith("roi_heads."):
            rep.unused.append(k)
            continue
        if target is not None:
            if new not in target:
                (rep.unused if k.startswith(MAE_OPTIONAL) else rep.unexpected).append(k)
                continue
            if k == "pos_embed" and v.shape != target[new].shape:
                v = _resize_pos(v, target[new].shape[1])
                rep.interpolated.append(new)
            if v.shape != target[new].shape:
                msg = f"{k}: {tuple(v.shape)} vs {tuple(target[new].shape)}"
                if k == "decoder_pos_embed" and v.shape[-1] == target[new].shape[-1]:
                    grid = math.isqrt(v.shape[1] - 1)
                    msg += f" (build the box head with pretrain_grid={grid})"
                rep.shape_mismatch.append(msg)
                continue
        out[new] = v
        rep.loaded.append(new)
    if target is not None:
        prefixes = [d for _, d in MAE_TO_IMTED if load_decoder or not d.startswith("roi_heads.")]
        fresh = "roi_heads.box_head.decoder_box_norm."  # imTED's: not in any MAE checkpoint
        rep.missing = [
            k
            for k in target
            if k.startswith(tuple(prefixes)) and k not in out and not k.startswith(fresh)
        ]
    return out, rep


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
