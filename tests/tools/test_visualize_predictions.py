"""tools/visualize_predictions.py: PNGs from a config + checkpoint and from a results json."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ..helpers import REPO, demo_data_root, load_config, load_tool

CONFIG = os.path.join(REPO, "configs", "baselines", "faster_rcnn_R18_FPN_demo.py")
TOOL = os.path.join(REPO, "tools", "visualize_predictions.py")


def _read_rgb(path: str) -> np.ndarray:
    from detectron2.data.detection_utils import read_image

    return read_image(path, format="RGB")


def _write_image(path, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], axis=-1)
    image = (image + rng.integers(0, 20, image.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return image


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints of the demo detector with the same random weights, except a box
    classifier that calls every proposal class 0 (score ~0.9997) in ``class0.pth`` and
    background in ``background.pth``: what the tool draws depends on the file it loads."""
    from detectron2.config import instantiate

    torch.manual_seed(0)
    model = instantiate(load_config("configs/baselines/faster_rcnn_R18_FPN_demo.py").model)
    cls_score = model.roi_heads.box_predictor.cls_score  # 5 classes + background (index 5)
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, index in (("class0", 0), ("background", 5)):
        with torch.no_grad():
            cls_score.weight.zero_()
            cls_score.bias.zero_()
            cls_score.bias[index] = 10.0
        paths[name] = str(folder / f"{name}.pth")
        torch.save({"model": model.state_dict()}, paths[name])
    return paths


def test_draws_a_models_predictions(checkpoints, tmp_path):
    tool = load_tool("visualize_predictions")
    folder = tmp_path / "images"
    folder.mkdir()
    inputs = {
        "a": _write_image(folder / "a.png", 200, 260, 0),
        "b": _write_image(tmp_path / "b.png", 240, 180, 1),
    }
    (folder / "notes.txt").write_text("not an image")
    common = ["--config-file", CONFIG, "--device", "cpu"]
    common += ["--input", str(folder), str(tmp_path / "b.png")]
    common += ["--opts", "model.roi_heads.box_predictor.test_topk_per_image=4"]  # quick to draw

    out = tmp_path / "out"
    written = tool.main(
        common
        + ["--checkpoint", checkpoints["class0"], "--output", str(out)]
        + ["--score-threshold", "0.5"]
    )
    assert [os.path.basename(w["output"]) for w in written] == ["a.png", "b.png"]
    for w in written:
        name = os.path.splitext(os.path.basename(w["output"]))[0]
        drawn = np.asarray(Image.open(w["output"]).convert("RGB"))
        assert drawn.shape == inputs[name].shape  # the image's size, not the model's input size
        assert w["instances"] == 4  # the loaded classifier, capped by the --opts override
        changed = np.abs(drawn.astype(int) - inputs[name]).max(axis=-1) > 40
        assert changed.mean() > 0.01, name

    # a classifier that sees only background: nothing drawn, the PNG is the image itself
    out_none = tmp_path / "out_none"
    written = tool.main(
        common + ["--checkpoint", checkpoints["background"], "--output", str(out_none)]
    )
    for w in written:
        name = os.path.splitext(os.path.basename(w["output"]))[0]
        assert w["instances"] == 0
        np.testing.assert_array_equal(np.asarray(Image.open(w["output"])), inputs[name])


def test_draws_a_results_json(tmp_path):
    from detectron2.data import DatasetCatalog

    demo_data_root()
    dicts = DatasetCatalog.get("d2ext_demo_shapes_val")[:3]
    with open(
        os.path.join(demo_data_root(), "annotations", "shapes_val.json")
    ) as f:  # dataset category ids, as COCOEvaluator writes them
        category_ids = [c["id"] for c in json.load(f)["categories"]]
    first = dicts[0]
    box = [40.0, 60.0, 80.0, 50.0]  # XYWH
    low = [150.0, 150.0, 40.0, 40.0]
    results = [
        {"image_id": first["image_id"], "category_id": category_ids[2], "bbox": box, "score": 0.9},
        {"image_id": first["image_id"], "category_id": category_ids[0], "bbox": low, "score": 0.2},
    ]
    results_file = tmp_path / "coco_instances_results.json"
    results_file.write_text(json.dumps(results))

    tool = load_tool("visualize_predictions")
    written = tool.main(
        ["--results", str(results_file), "--dataset", "d2ext_demo_shapes_val"]
        + ["--output", str(tmp_path / "out"), "--max-images", "3"]
    )
    assert len(written) == 3
    assert [w["instances"] for w in written] == [1, 0, 0]
    for d, w in zip(dicts, written):
        image = _read_rgb(d["file_name"])
        drawn = np.asarray(Image.open(w["output"]).convert("RGB"))
        assert drawn.shape == image.shape == (d["height"], d["width"], 3)
        if w["instances"] == 0:
            np.testing.assert_array_equal(drawn, image)
    image = _read_rgb(first["file_name"])
    drawn = np.asarray(Image.open(written[0]["output"]).convert("RGB"))
    diff = np.abs(drawn.astype(int) - image).max(axis=-1)
    x, y, w, h = (int(v) for v in box)
    edge = np.concatenate([diff[y + 5 : y + h - 5, x], diff[y + 5 : y + h - 5, x + w]])
    assert (edge > 0).mean() > 0.9  # the box's left and right sides are drawn
    inside = diff[y + 15 : y + h - 5, x + 5 : x + w - 5]
    assert (inside > 0).mean() < 0.5  # a box, not a filled rectangle
    lx, ly, lw, lh = (int(v) for v in low)
    assert diff[ly : ly + lh, lx : lx + lw].max() == 0  # the 0.2 box is below the threshold

    np.random.seed(123)  # the colours do not depend on the global random state
    again = tool.main(
        ["--results", str(results_file), "--dataset", "d2ext_demo_shapes_val"]
        + ["--output", str(tmp_path / "again"), "--max-images", "1"]
    )
    with open(again[0]["output"], "rb") as f1, open(written[0]["output"], "rb") as f2:
        assert f1.read() == f2.read()


def test_results_of_another_dataset_are_refused(tmp_path):
    demo_data_root()
    results_file = tmp_path / "r.json"
    results_file.write_text(
        json.dumps([{"image_id": 10**9, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}])
    )
    tool = load_tool("visualize_predictions")
    with pytest.raises(ValueError, match="image ids not in"):
        tool.main(
            ["--results", str(results_file), "--dataset", "d2ext_demo_shapes_val"]
            + ["--output", str(tmp_path / "out")]
        )


def test_help_is_complete_without_importing_torch():
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{TOOL!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({TOOL!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH_IMPORTED', 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "TORCH_IMPORTED False" in out
    assert "From a results file" in out
    assert "a rerun gives the same PNGs." in out  # the last docstring line
    assert "--score-threshold" in out
