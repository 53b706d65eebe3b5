"""The Co-DETR encoder analysis (d2ext.projects.codetr.analysis, tools/analyze_discriminability.py):
the score of a hand-set memory equals the hand computation, IoF / IoB are monotone in [0, 1],
every Deformable-DETR-family demo model is readable, the tool writes its outputs and resumes."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from d2ext.modeling.deformable_detr import EncoderOutput
from d2ext.projects.codetr import analysis
from d2ext.projects.codetr.analysis import (
    IoFIoBCurve,
    discriminability_score,
    encoder_norm_maps,
    foreground_mask,
    model_discriminability,
)

from ..helpers import REPO, load_config, load_tool

DEF = "projects/CoDETR/configs/deformable_detr_R18_demo.py"
MODELS = [
    DEF,
    "projects/CoDETR/configs/co_deformable_detr_R18_demo.py",
    "projects/CoDETR/configs/dino_R18_demo.py",
    "projects/CoDETR/configs/co_dino_R18_demo.py",
]
SHRINK = [
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=1",
    "model.transformer.num_queries=10",
]


def _hand_memory():
    """Two levels, 2 x 4 and 1 x 2, channels chosen so that the norms are whole numbers."""
    level0 = [[0, 1, 2, 3], [4, 5, 6, 8]]  # norms, written as (n, 0) vectors...
    level1 = [[3, 0]]  # ... and as (0.6 n, 0.8 n) -> norm n: 5 * 3 = 15 and 0
    mem = [[v, 0.0] for row in level0 for v in row]
    mem += [[0.6 * 5 * v, 0.8 * 5 * v] for row in level1 for v in row]
    return torch.tensor([mem]), [(2, 4), (1, 2)]


def test_hand_set_memory_score():
    memory, shapes = _hand_memory()
    [maps] = encoder_norm_maps(memory, shapes, [(16, 32)], (16, 32))
    torch.testing.assert_close(maps[0], torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 8]]))
    torch.testing.assert_close(maps[1], torch.tensor([[15.0, 0.0]]))
    score = discriminability_score(maps)
    assert score.shape == (2, 4)
    # level 0 min-max: v / 8; level 1: [1, 0], bilinear (half-pixel centres) over 4 columns:
    # sample x = -0.25, 0.25, 0.75, 1.25 -> clamped weights -> 1, 0.75, 0.25, 0
    up = torch.tensor([1.0, 0.75, 0.25, 0.0])
    expected = (torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 8]]) / 8 + up) / 2
    torch.testing.assert_close(score, expected)
    # "max" normalisation: level 0 / 8 (its min is 0 already), level 1 / 15
    torch.testing.assert_close(discriminability_score(maps, normalization="max"), expected)
    shifted = [m + 2 for m in maps]  # min-max ignores an offset, max does not
    torch.testing.assert_close(discriminability_score(shifted), expected)
    assert not torch.allclose(discriminability_score(shifted, normalization="max"), expected)
    with pytest.raises(ValueError, match="normalization"):
        discriminability_score(maps, normalization="zscore")


def test_padding_is_cut_per_level():
    memory, shapes = _hand_memory()
    # an 8 x 20 image in a 16 x 32 batch: level 0 keeps ceil(8 * 2 / 16) = 1 row and
    # ceil(20 * 4 / 32) = 3 columns, level 1 1 x ceil(20 * 2 / 32) = 2
    [maps] = encoder_norm_maps(memory, shapes, [(8, 20)], (16, 32))
    torch.testing.assert_close(maps[0], torch.tensor([[0.0, 1, 2]]))
    torch.testing.assert_close(maps[1], torch.tensor([[15.0, 0.0]]))
    with pytest.raises(ValueError, match="levels"):
        encoder_norm_maps(memory[:, :5], shapes, [(8, 20)], (16, 32))


def test_foreground_mask_by_cell_centres():
    # a 4 x 4 grid over an 8 x 8 image: centres at 1, 3, 5, 7
    mask = foreground_mask(torch.tensor([[2.0, 0.0, 6.0, 4.0]]), (8, 8), (4, 4))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0:2, 1:3] = True
    assert torch.equal(mask, expected)
    assert not foreground_mask(torch.zeros(0, 4), (8, 8), (4, 4)).any()


def test_iof_iob_by_hand_and_monotone():
    curve = IoFIoBCurve(num_thresholds=11)  # t = 0, 0.1, ..., 1
    score = torch.tensor([[0.05, 0.45, 0.95], [0.25, 0.25, 1.0]])
    fg = torch.tensor([[True, True, True], [False, False, False]])
    curve.update(score, fg)
    r = curve.result()
    # foreground 0.05, 0.45, 0.95; background 0.25, 0.25, 1.0
    assert r["iof"][0] == 1 and r["iof"][1] == pytest.approx(2 / 3) and r["iof"][5] == 1 / 3
    assert r["iob"][2] == 1 and r["iob"][3] == pytest.approx(1 / 3) and r["iob"][10] == 1 / 3
    assert r["mean_fg_score"] == pytest.approx(1.45 / 3)
    assert (r["fg_cells"], r["bg_cells"], r["num_images"]) == (3, 3, 1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        s = torch.tensor(rng.uniform(0, 1, (16, 16)), dtype=torch.float32)
        curve.update(s, torch.tensor(rng.uniform(0, 1, (16, 16)) > 0.7))
    r = curve.result()
    for key in ("iof", "iob"):
        v = np.asarray(r[key])
        assert (v >= 0).all() and (v <= 1).all() and (np.diff(v) <= 0).all()
    state = json.loads(json.dumps(curve.state_dict()))
    restored = IoFIoBCurve(11)
    restored.load_state_dict(state)
    assert restored.result() == r


def test_auc_separates():
    perfect = IoFIoBCurve(101)
    perfect.update(torch.tensor([[0.9, 0.8, 0.1, 0.2]]), torch.tensor([[True, True, False, False]]))
    assert perfect.result()["auc"] == pytest.approx(1.0)
    inverted = IoFIoBCurve(101)
    inverted.update(
        torch.tensor([[0.1, 0.2, 0.9, 0.8]]), torch.tensor([[True, True, False, False]])
    )
    assert inverted.result()["auc"] == pytest.approx(0.0, abs=1e-9)
    same = IoFIoBCurve(101)
    same.update(torch.tensor([[0.3, 0.6, 0.3, 0.6]]), torch.tensor([[True, True, False, False]]))
    assert same.result()["auc"] == pytest.approx(0.5)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.rand(3, 64, 96, generator=g) * 255},
        {"image": torch.rand(3, 80, 64, generator=g) * 255},
    ]


def _tiny(config):
    cfg = load_config(config)
    from detectron2.config import LazyConfig

    cfg = LazyConfig.apply_overrides(cfg, SHRINK)
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


@pytest.mark.parametrize("config", MODELS)
def test_every_family_model_is_read(config):
    model = _tiny(config)
    inputs = _inputs()
    scores, sizes = model_discriminability(model, inputs)
    assert sizes == [(64, 96), (80, 64)]
    images = model.preprocess_image(inputs)
    enc, _ = model.encode(images)
    finest = [int(v) for v in enc.spatial_shapes[0]]
    padded = images.tensor.shape[-2:]
    for score, (h, w) in zip(scores, sizes):
        assert score.shape == (
            -(-h * finest[0] // padded[0]),
            -(-w * finest[1] // padded[1]),
        )
        assert score.min() >= 0 and score.max() <= 1 and score.max() > 0


def test_the_model_path_reads_the_encoder_memory(monkeypatch):
    """A model whose encoder returns the hand-set memory gives the hand-computed score."""
    model = _tiny(DEF)
    memory, shapes = _hand_memory()

    def encode(images):
        n = images.tensor.shape[0]
        return (
            EncoderOutput(
                memory=memory.expand(n, -1, -1),
                padding_mask=torch.zeros(n, memory.shape[1], dtype=torch.bool),
                spatial_shapes=torch.tensor(shapes),
                level_start_index=torch.tensor([0, 8]),
                valid_ratios=torch.ones(n, 2, 2),
            ),
            [],
        )

    monkeypatch.setattr(model, "encode", encode)
    monkeypatch.setattr(model, "size_divisibility", 1)
    [score], _ = model_discriminability(model, [{"image": torch.zeros(3, 16, 32)}])
    up = torch.tensor([1.0, 0.75, 0.25, 0.0])
    expected = (torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 8]]) / 8 + up) / 2
    torch.testing.assert_close(score, expected)
    with pytest.raises(TypeError, match="encode"):
        model_discriminability(torch.nn.Linear(2, 2), [{"image": torch.zeros(3, 8, 8)}])


@pytest.fixture
def synthetic_dataset(tmp_path):
    name = "test_discriminability_synthetic"
    records = []
    for i, (h, w) in enumerate([(80, 120), (96, 72)]):
        rng = np.random.default_rng(i)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(
            {
                "file_name": str(path),
                "height": h,
                "width": w,
                "image_id": i,
                "annotations": [
                    {"bbox": [10, 10, 50, 40], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}
                ],
            }
        )
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=[f"c{k}" for k in range(5)])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = _tiny(DEF)
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def test_tool_writes_pngs_and_json_and_resumes(
    synthetic_dataset, checkpoint, tmp_path, monkeypatch
):
    tool = load_tool("analyze_discriminability")
    out = tmp_path / "out"
    argv = ["--config-file", os.path.join(REPO, DEF), "--checkpoint", checkpoint]
    argv += ["--dataset", synthetic_dataset, "--output", str(out), "--device", "cpu"]
    argv += ["--num-thresholds", "21", "--label", "def", "--opts", *SHRINK]
    result = tool.main(argv)
    assert result["num_images"] == 2 and result["label"] == "def"
    written = json.loads((out / "discriminability.json").read_text())
    assert written["auc"] == pytest.approx(result["auc"])
    for key in ("iof", "iob"):
        v = np.asarray(written[key])
        assert len(v) == 21 and v[0] == 1 and (np.diff(v) <= 0).all() and (v >= 0).all()
    assert written["fg_cells"] > 0 and written["bg_cells"] > written["fg_cells"]
    pngs = sorted(os.listdir(out / "score_maps"))
    assert pngs == ["000000_0.png", "000001_1.png"]
    for png in [out / "iof_iob.png", *(out / "score_maps" / p for p in pngs)]:
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "state.json").read_text())["done"] == 2

    # a rerun finds every image done: the model is not run again, the result is the same
    def fail(*args, **kwargs):
        raise AssertionError("resumed run recomputed an image")

    monkeypatch.setattr(analysis, "model_discriminability", fail)
    again = tool.main(argv)
    assert again["auc"] == result["auc"] and again["iof"] == result["iof"]
    with pytest.raises(ValueError, match="other settings"):
        tool.main([*argv[:-4], "--normalization", "max", "--opts", *SHRINK])
    monkeypatch.undo()

    # several runs on one plot
    png = tool.main(["--compare", str(out / "discriminability.json")] * 2 + ["--output", str(out)])
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_tool_argument_errors(tmp_path):
    tool = load_tool("analyze_discriminability")
    with pytest.raises(SystemExit):
        tool.main(["--output", str(tmp_path)])  # neither a model nor --compare
    with pytest.raises(SystemExit):
        tool.main(["--compare", str(tmp_path / "missing.json"), "--output", str(tmp_path)])
