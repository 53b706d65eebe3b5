#!/usr/bin/env python
"""Encodes label names into ScaleDet / Detic text-embedding files.

    # the unified label space of a ScaleDet config (its datasets, prompts and encoder)
    python tools/dump_text_embeddings.py \
        --config-file projects/ScaleDet/configs/scaledet_R18_FPN_demo.py
    # any vocabulary: names, a file of names (one per line) or a registered dataset's classes
    python tools/dump_text_embeddings.py --labels "disc,box,star" --output vocab.npy
    python tools/dump_text_embeddings.py --dataset lvis_v1_val --output lvis.npy \
        --backend open_clip --model ViT-B-32 --pretrained /path/to/open_clip_vit_b32.bin
    # several datasets' unified label space (the merges are printed)
    python tools/dump_text_embeddings.py --datasets coco_2017_train lvis_v1_train \
        --merge-identical --output coco+lvis.npy

Writes OUTPUT (.npy, float16, (C, D), the prompt-averaged embeddings, not re-normalised: Detic's
format), OUTPUT's .json sidecar (labels, prompts, dimension, and the encoder: backend, model,
checkpoint and the sha256 of its weights) and OUTPUT_similarity.npy (the (C, C) label
similarity in [0, 1]). Progress lines with rate and ETA go to stderr.

An existing OUTPUT is
  - kept when its sidecar records the same encoder (sha256), labels, prompts and width;
  - rewritten when this tool's sidecar records the same encoder but other labels or prompts;
  - never overwritten without --force when it was not written by d2ext (no sidecar: e.g. a
    Detic file) or was written by another encoder (or an older d2ext that recorded no hash).
An open_clip encoder without --pretrained (random weights) is refused.
``--inspect FILE`` checks an existing file (ours or Detic's) and prints it.
"""

import argparse
import json
import os


def _labels(args) -> list[str]:
    from d2ext.projects.scaledet import dataset_label_names, label_space_names

    if args.labels:
        return [s.strip() for s in args.labels.split(",") if s.strip()]
    if args.labels_file:
        with open(args.labels_file) as f:
            return [line.strip() for line in f if line.strip()]
    if args.dataset:
        return dataset_label_names(args.dataset)
    if args.datasets:
        return label_space_names(args.datasets, args.merge_identical)
    raise SystemExit("give --config-file, --labels, --labels-file, --dataset or --datasets")


def _register_open_clip_config(path: str) -> str:
    """Registers a custom open_clip architecture (a model-config json, named by its file stem,
    as open_clip's own configs are) and returns its name."""
    import open_clip

    if not os.path.isfile(path):
        raise FileNotFoundError(f"open_clip model config {path!r} not found")
    open_clip.add_model_config(path)
    return os.path.splitext(os.path.basename(path))[0]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = parser.add_argument_group("labels (one of)")
    src.add_argument("--config-file", help="a ScaleDet config: its unified label space and text")
    src.add_argument("--labels", help="comma-separated label names")
    src.add_argument("--labels-file", help="a text file, one label name per line")
    src.add_argument("--dataset", help="a registered dataset: its thing_classes")
    src.add_argument("--datasets", nargs="+", help="registered datasets: their unified labels")
    parser.add_argument("--merge-identical", action="store_true", help="with --datasets")
    parser.add_argument("--output", help="the .npy to write (default: the config's text.path)")
    parser.add_argument(
        "--backend",
        choices=["sentence", "open_clip"],
        default=None,
        help="text encoder (default: the config's scaledet.text.backend, else sentence)",
    )
    parser.add_argument("--model", default=None, help="open_clip architecture or sentence model")
    parser.add_argument(
        "--pretrained",
        default=None,
        help="open_clip checkpoint path (or a tag, online only); required for open_clip",
    )
    parser.add_argument("--model-config", help="json of a custom open_clip architecture")
    parser.add_argument("--prompts-file", help="prompt templates with {}, one per line")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT whoever wrote it")
    parser.add_argument("--inspect", metavar="FILE", help="check and describe an existing file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    import sys

    from d2ext.data import register_all_datasets
    from d2ext.projects.scaledet import (
        DEFAULT_PROMPTS,
        build_text_encoder,
        build_unified_label_space,
        encode_labels,
        label_similarity,
        load_text_embeddings,
        read_embedding_file,
        save_text_embeddings,
        text_encoder_spec,
    )
    from d2ext.projects.scaledet.text_embeddings import (
        RateETA,
        describe_encoder,
        embedding_file_problems,
    )
    from d2ext.utils.io import atomic_write

    if args.inspect:
        emb, meta = read_embedding_file(args.inspect)
        print(f"{args.inspect}: {emb.shape[0]} labels x {emb.shape[1]} dims, finite")
        print(json.dumps(meta, indent=1) if meta else "no sidecar (a Detic file: order is yours)")
        return emb

    register_all_datasets()
    backend, model, pretrained, prompts = "sentence", None, None, list(DEFAULT_PROMPTS)
    output = args.output
    if args.config_file:
        from detectron2.config import LazyConfig

        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
        text = cfg.scaledet.text
        backend, model, pretrained = text.backend, text.model, text.pretrained
        prompts = list(text.prompts)
        output = output or text.path
        if not (args.labels or args.labels_file or args.dataset or args.datasets):
            args.datasets = list(cfg.scaledet.datasets)
            args.merge_identical = bool(cfg.scaledet.merge_identical)
    if args.datasets and not (args.labels or args.labels_file or args.dataset):
        space = build_unified_label_space(args.datasets, args.merge_identical)
        print(space.report())
        labels = list(space.names)
    else:
        labels = _labels(args)
    if not output:
        raise SystemExit("--output is needed without --config-file")
    backend = args.backend or backend
    model = args.model or model
    pretrained = args.pretrained or pretrained
    if backend == "precomputed":
        raise SystemExit("text backend 'precomputed' has no encoder; give --backend")
    if args.model_config:
        model = _register_open_clip_config(args.model_config)
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]

    spec = text_encoder_spec(backend, model, pretrained)
    if os.path.exists(output) and not args.force:
        emb, meta = read_embedding_file(output)
        recorded = (meta or {}).get("encoder")
        if not (meta and meta.get("writer") == "d2ext" and recorded):
            raise SystemExit(
                f"{output} exists and was not written by this tool (no d2ext sidecar recording "
                "its encoder: e.g. a Detic file, or an older d2ext file); pass --force to "
                "overwrite it, or choose another --output"
            )
        enc, content = embedding_file_problems(emb, meta, labels, prompts, spec)
        if recorded.get("random_weights"):
            enc.append("it was encoded by a text tower with random weights")
        if enc:
            raise SystemExit(
                f"{output} was written by another text encoder ({'; '.join(enc)}); pass "
                "--force to overwrite it, or choose another --output"
            )
        if not content:
            print(f"{output}: up to date ({len(labels)} labels, {describe_encoder(recorded)})")
            return load_text_embeddings(output, labels)
        print(f"{output}: {'; '.join(content)}: re-encoding (same encoder)")
    encoder = build_text_encoder(backend, model, pretrained)
    progress = RateETA(lambda line: print(line, file=sys.stderr, flush=True), min_interval=10.0)
    emb = encode_labels(encoder, labels, prompts, progress=progress)
    save_text_embeddings(output, emb, labels, prompts, encoder.info)
    unit = load_text_embeddings(output, labels)
    sim = label_similarity(unit).numpy()
    import numpy as np

    atomic_write(os.path.splitext(output)[0] + "_similarity.npy", lambda f: np.save(f, sim))
    print(
        f"{output}: {len(labels)} labels x {emb.shape[1]} dims ({describe_encoder(encoder.info)})"
    )
    return unit


if __name__ == "__main__":
    main()
