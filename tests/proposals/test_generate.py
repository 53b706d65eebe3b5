import numpy as np
import pytest
import skimage.data
from PIL import Image

from d2ext.proposals import (
    SOCO_FILTER,
    ProposalCache,
    ProposalInputError,
    generate_proposals,
    load_image_rgb,
    shard_items,
)


def _photo(size=128):
    return Image.fromarray(skimage.data.chelsea()).resize((size + 32, size))


@pytest.fixture
def images(tmp_path):
    """Real photos in several formats, and the bad inputs generation must survive."""
    paths = {}
    _photo().save(tmp_path / "rgb.jpg")
    _photo().convert("L").save(tmp_path / "gray.png")
    _photo().convert("RGBA").save(tmp_path / "rgba.png")
    gray16 = (np.asarray(_photo().convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "deep16.png")
    _photo(20).save(tmp_path / "tiny.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    data = (tmp_path / "rgb.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    for p in sorted(tmp_path.iterdir()):
        paths[p.name] = str(p)
    return paths


def test_load_image_formats_and_bad_inputs(images):
    for name in ("rgb.jpg", "gray.png", "rgba.png", "deep16.png"):
        img = load_image_rgb(images[name])
        assert img.dtype == np.uint8 and img.shape == (128, 160, 3), name
    # 16-bit scaled to 8 bits, not clipped: same picture as the 8-bit grayscale one
    assert (
        np.abs(
            load_image_rgb(images["deep16.png"]).astype(int) - load_image_rgb(images["gray.png"])
        ).max()
        <= 1
    )
    with pytest.raises(ProposalInputError, match="smaller than 32"):
        load_image_rgb(images["tiny.jpg"])
    with pytest.raises(ProposalInputError, match="unreadable"):
        load_image_rgb(images["corrupt.jpg"])
    with pytest.raises(ProposalInputError, match="unreadable"):
        load_image_rgb(images["truncated.jpg"])
    with pytest.raises(ProposalInputError, match="too large"):
        load_image_rgb(images["rgb.jpg"], max_pixels=1000)


@pytest.mark.parametrize("backend", ["d2ext", "selectivesearch"])
def test_generate_records_failures_and_resumes(images, tmp_path, backend):
    out = str(tmp_path / "cache")
    items = sorted(images.items())
    summary = generate_proposals(
        items, out, backend=backend, filt=SOCO_FILTER, chunk_size=2, progress=False
    )
    assert summary.done == 4 and set(summary.failed) == {"tiny.jpg", "corrupt.jpg", "truncated.jpg"}
    assert "smaller than 32" in summary.failed["tiny.jpg"] and "failed 3" in str(summary)
    cache = ProposalCache(out)
    assert set(cache.keys()) == {"rgb.jpg", "gray.png", "rgba.png", "deep16.png"}
    assert cache.failed.keys() == summary.failed.keys()
    boxes = cache["rgb.jpg"]
    assert len(boxes) > 0 and cache.size("rgb.jpg") == (128, 160)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (w >= 32).all() and (h >= 32).all()  # SoCo's filter (or its fallbacks) applied
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 128).all()
    again = generate_proposals(
        items, out, backend=backend, filt=SOCO_FILTER, chunk_size=2, progress=False
    )
    assert again.done == 0 and again.skipped == len(items)


def test_shards_partition_the_work():
    items = [(f"k{i}", f"p{i}") for i in range(10)]
    shards = [shard_items(items, s, 3) for s in range(3)]
    assert sorted(sum(shards, [])) == sorted(items)
    assert all(len(s) in (3, 4) for s in shards)
    with pytest.raises(ValueError):
        shard_items(items, 3, 3)


def test_command_line_tool_with_shards(images, tmp_path, capsys):
    import os

    from ..helpers import load_tool

    tool = load_tool("generate_proposals")
    folder = os.path.dirname(images["rgb.jpg"])
    out = str(tmp_path / "cli")
    for shard in ("0/2", "1/2"):
        tool.main(
            ["--images", folder, "--out", out, "--shard", shard, "--workers", "1", "--no-progress"]
        )
    printed = capsys.readouterr().out
    assert "images done" in printed and "failed" in printed
    cache = ProposalCache(out)
    assert len(cache) == 4 and len(cache.failed) == 3
    assert sorted(os.listdir(out)) == [
        "settings.json",
        "shard-00000-of-00002",
        "shard-00001-of-00002",
    ]
    with pytest.raises(SystemExit, match="i/N"):
        tool.main(["--images", folder, "--out", out, "--shard", "x"])


def test_visualize_tool_writes_side_by_side_png(images, tmp_path):
    from ..helpers import load_tool

    tool = load_tool("visualize_proposals")
    (out,) = tool.main([images["rgb.jpg"], "--out", str(tmp_path / "vis")])
    png = np.asarray(Image.open(out))
    assert png.shape[:2] == (128, 320)  # before | after, side by side
    assert png[:, :160].std() > 0 and not np.array_equal(png[:, :160], png[:, 160:])
