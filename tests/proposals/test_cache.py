import os

import numpy as np
import pytest

from d2ext.proposals import ProposalCache, ProposalWriter


def _boxes(rng, n):
    xy = rng.uniform(0, 300, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 200, (n, 2))], axis=1).astype(np.float32)


def test_round_trip_over_shards_chunks_empty_and_failed(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    for shard in range(2):
        writer = ProposalWriter(str(tmp_path), shard, 2, chunk_size=3)
        for i in range(7):
            key = f"img_{shard}_{i}.jpg"
            boxes = _boxes(rng, i % 4)  # includes images with no box
            writer.add(key, (480 + i, 640), boxes)
            expected[key] = (boxes, (480 + i, 640))
        writer.add_failed(f"broken_{shard}.jpg", "cannot identify image file")
        writer.flush()
    cache = ProposalCache(str(tmp_path))
    assert len(cache) == 14 and set(cache.keys()) == set(expected)
    for key, (boxes, size) in expected.items():
        np.testing.assert_array_equal(cache[key], boxes)
        assert cache[key].dtype == np.float32 and cache.size(key) == size
    assert cache.failed == {
        "broken_0.jpg": "cannot identify image file",
        "broken_1.jpg": "cannot identify image file",
    }
    assert "img_0_0.jpg" in cache.empty and "img_0_1.jpg" not in cache.empty
    with pytest.raises(KeyError, match="it failed: cannot identify"):
        cache["broken_0.jpg"]
    with pytest.raises(KeyError, match="no proposals"):
        cache["nope.jpg"]
    # plain .npy files, memory-mapped; no pickle
    chunk = os.path.join(tmp_path, "shard-00000-of-00002", "chunk-000000")
    assert sorted(os.listdir(chunk)) == [
        "boxes.npy",
        "keys.npy",
        "meta.json",
        "offsets.npy",
        "sizes.npy",
    ]
    np.load(os.path.join(chunk, "keys.npy"), allow_pickle=False)


def test_resume_after_a_crash_keeps_complete_chunks_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    writer = ProposalWriter(str(tmp_path), chunk_size=2)
    for i in range(4):  # two complete chunks
        writer.add(f"a{i}", (100, 100), _boxes(rng, 2))
    writer.add("a4", (100, 100), _boxes(rng, 1))  # pending, never flushed: lost on a kill

    calls = {"n": 0}
    real_save = np.save

    def dying_save(f, arr):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed in the middle of writing a chunk
        real_save(f, arr)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        writer.add("a5", (100, 100), _boxes(rng, 1))
    monkeypatch.setattr(np, "save", real_save)
    writer._lock.release()  # the kernel drops a killed process's lock
    # a kill -9 leaves a temporary folder behind; readers ignore it, the next writer removes it
    os.makedirs(os.path.join(tmp_path, "shard-00000-of-00001", ".tmp-chunk-dead"))

    rerun = ProposalWriter(str(tmp_path), chunk_size=2)
    assert rerun.done_keys() == {"a0", "a1", "a2", "a3"}
    for key in ["a4", "a5"]:
        rerun.add(key, (100, 100), _boxes(rng, 3))
    rerun.close()
    assert not any(n.startswith(".tmp-chunk") for n in os.listdir(rerun.dir))
    cache = ProposalCache(str(tmp_path))
    assert sorted(cache.keys()) == ["a0", "a1", "a2", "a3", "a4", "a5"]
    assert len(cache["a5"]) == 3


def test_bad_input(tmp_path):
    writer = ProposalWriter(str(tmp_path))
    with pytest.raises(ValueError, match="NaN"):
        writer.add("x", (10, 10), np.array([[0, 0, np.nan, 1]]))
    with pytest.raises(ValueError, match="shard"):
        ProposalWriter(str(tmp_path), 3, 2)
    with pytest.raises(FileNotFoundError):
        ProposalCache(str(tmp_path / "missing"))
