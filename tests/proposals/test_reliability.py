"""Proposal generation loses nothing and reuses nothing stale: unique keys, recorded settings,
retried failures, dead workers, one writer per shard, the user's umask."""

import logging
import os
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import skimage.data
from PIL import Image

from d2ext.proposals import (
    ALIGNDET_FILTER,
    SOCO_FILTER,
    CacheLockedError,
    CacheSettingsError,
    DatasetProposals,
    DuplicateKeyError,
    ProposalCache,
    ProposalFilter,
    ProposalWriter,
    WorkerDiedError,
    cache_to_coco,
    generate_proposals,
)

from ..helpers import REPO, load_tool

BACKEND = "selectivesearch"  # needs no compiled extension
KILL_SIZE = (96, 112)  # (H, W) of the image the killing filter dies on


def _save_photo(path, height=128, width=160, which="chelsea"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(getattr(skimage.data, which)()).resize((width, height)).save(path)
    return str(path)


def _run(items, out, **kwargs):
    kwargs.setdefault("backend", BACKEND)
    kwargs.setdefault("filt", SOCO_FILTER)
    return generate_proposals(items, str(out), progress=False, **kwargs)


def _chunks(out):
    return [
        os.path.join(d, c)
        for d in sorted(os.listdir(out))
        if d.startswith("shard-")
        for c in os.listdir(os.path.join(out, d))
        if c.startswith("chunk-")
    ]


# ---------------------------------------------------------------- keys


def test_glob_keys_are_paths_relative_to_the_common_folder(tmp_path, capsys):
    a = _save_photo(tmp_path / "imgs" / "a" / "img.png", 128, 160)
    b = _save_photo(tmp_path / "imgs" / "b" / "img.png", 120, 100, which="astronaut")
    tool = load_tool("generate_proposals")
    out = str(tmp_path / "cache")
    glob = str(tmp_path / "imgs" / "*" / "img.png")
    tool.main(["--images", glob, "--out", out, "--backend", BACKEND, "--workers", "1"])
    assert "images done 2" in capsys.readouterr().out
    cache = ProposalCache(out)
    assert sorted(cache.keys()) == ["a/img.png", "b/img.png"]
    assert cache.size("a/img.png") == (128, 160) and cache.size("b/img.png") == (120, 100)
    # the mappers find them under the common folder
    proposals = DatasetProposals(out, key="file_name", image_root=str(tmp_path / "imgs"))
    for path, size in ((a, (128, 160)), (b, (120, 100))):
        boxes = proposals({"file_name": path, "height": size[0], "width": size[1]})
        np.testing.assert_array_equal(boxes, cache[os.path.relpath(path, tmp_path / "imgs")])
    # one folder: keys are file names, as before
    assert tool.list_images(str(tmp_path / "imgs" / "a" / "*.png")) == [("img.png", a)]


def test_duplicate_keys_are_refused_before_any_work(tmp_path):
    a = _save_photo(tmp_path / "a" / "img.png")
    b = _save_photo(tmp_path / "b" / "img.png")
    out = tmp_path / "cache"
    with pytest.raises(DuplicateKeyError, match="'img.png'.*a/img.png and .*b/img.png"):
        _run([("img.png", a), ("img.png", b)], out, num_shards=2)  # across shards too
    assert not out.exists() or _chunks(out) == []

    # the tool, for a dataset with two dicts of one image_id
    from detectron2.data import DatasetCatalog

    name = "d2ext_test_duplicate_ids"
    DatasetCatalog.register(name, lambda: [{"image_id": 7, "file_name": p} for p in (a, b)])
    try:
        tool = load_tool("generate_proposals")
        with pytest.raises(SystemExit, match="two images have the key '7'"):
            tool.main(["--dataset", name, "--out", str(out), "--backend", BACKEND])
    finally:
        DatasetCatalog.remove(name)
    assert not out.exists() or _chunks(out) == []


def test_writer_and_reader_refuse_duplicate_keys(tmp_path):
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    with ProposalWriter(str(tmp_path), chunk_size=10) as writer:
        writer.add("x", (50, 50), boxes)
        with pytest.raises(DuplicateKeyError, match="'x' was given twice"):
            writer.add("x", (60, 60), boxes)
        with pytest.raises(DuplicateKeyError, match="'x' was given twice"):
            writer.add_failed("x", "unreadable")
    with ProposalWriter(str(tmp_path)) as writer:  # a later session of the same shard
        with pytest.raises(DuplicateKeyError, match="'x' is already stored"):
            writer.add("x", (60, 60), boxes)
    with pytest.raises(ValueError, match="closed"):  # it no longer holds the lock
        writer.add("z", (60, 60), boxes)
    # a key stored by two shards (e.g. shards of two different --shard i/N splits)
    with ProposalWriter(str(tmp_path), 1, 2) as writer:
        writer.add("x", (70, 70), boxes)
    with pytest.raises(DuplicateKeyError, match="'x' is stored twice"):
        ProposalCache(str(tmp_path))


# ---------------------------------------------------------------- settings


def test_cache_records_settings_and_refuses_others(tmp_path, capsys):
    photo = _save_photo(tmp_path / "imgs" / "rgb.png")
    items = [("rgb.png", photo)]
    out = tmp_path / "cache"
    _run(items, out)
    settings = ProposalCache(str(out)).settings
    assert settings["backend"] == BACKEND and settings["filter"]["name"] == "ratio3size0308"
    assert settings["selective_search"] == {"scale": 300, "sigma": 0.9, "min_size": 100}
    assert settings["filter"]["min_size_ratio"] == 0.3

    for change in (
        {"filt": ALIGNDET_FILTER},
        {"filt": None},
        {"filt": ProposalFilter(min_side=16.0)},
        {"backend": "d2ext"},
        {"backend_kwargs": {"scale": 500}},
    ):
        with pytest.raises(CacheSettingsError, match="--out.*--overwrite") as info:
            _run(items, out, **change)
        assert str(out) in str(info.value)
    with pytest.raises(CacheSettingsError, match="filter.min_size_ratio: cache 0.3, this run 0.0"):
        _run(items, out, filt=ALIGNDET_FILTER)

    tool = load_tool("generate_proposals")
    args = ["--images", str(tmp_path / "imgs"), "--out", str(out), "--backend", BACKEND]
    with pytest.raises(SystemExit, match="other settings.*--out.*--overwrite"):
        tool.main(args + ["--filter", "ratio3size0008"])
    tool.main(args + ["--filter", "ratio3size0308", "--overwrite"])  # same settings: resumed
    assert "images done 0, skipped 1" in capsys.readouterr().out
    tool.main(args + ["--filter", "ratio3size0008", "--overwrite"])  # others: afresh
    assert "images done 1, skipped 0" in capsys.readouterr().out
    cache = ProposalCache(str(out))
    assert cache.settings["filter"]["name"] == "ratio3size0008" and len(cache) == 1
    assert len(_chunks(out)) == 1


def _keep_all(boxes_xywh, image_size):
    return boxes_xywh, "all"


def test_settings_of_a_plain_function_filter_are_stable_across_runs(tmp_path):
    from d2ext.proposals.generate import generation_settings

    settings = generation_settings(BACKEND, _keep_all)
    assert settings["filter"] == {"class": f"{__name__}._keep_all"}  # no memory address
    photo = _save_photo(tmp_path / "rgb.png")
    _run([("rgb.png", photo)], tmp_path / "cache", filt=_keep_all)
    assert _run([("rgb.png", photo)], tmp_path / "cache", filt=_keep_all).skipped == 1


def test_cache_without_settings_record_is_refused(tmp_path):
    photo = _save_photo(tmp_path / "rgb.png")
    out = tmp_path / "cache"
    with ProposalWriter(str(out)) as writer:  # as a converter or an older d2ext writes
        writer.add("rgb.png", (128, 160), np.zeros((0, 4)))
    with pytest.raises(CacheSettingsError, match="no record.*--out.*--overwrite"):
        _run([("rgb.png", photo)], out)
    summary = _run([("rgb.png", photo)], out, overwrite=True)
    assert summary.done == 1 and len(ProposalCache(str(out))["rgb.png"]) > 0


# ---------------------------------------------------------------- failures


def test_failed_images_are_retried_on_request(tmp_path, capsys):
    good = _save_photo(tmp_path / "imgs" / "good.png")
    flaky = tmp_path / "imgs" / "flaky.png"
    flaky.write_bytes(b"\x89PNG half written")  # e.g. a transient I/O error
    items = [("good.png", good), ("flaky.png", str(flaky))]
    out = tmp_path / "cache"
    first = _run(items, out)
    assert first.done == 1 and list(first.failed) == ["flaky.png"]

    _save_photo(flaky)  # the file is fine now
    again = _run(items, out)
    assert (again.done, again.skipped, again.skipped_failed) == (0, 2, 1)
    assert "previously failed 1: --retry-failed retries them" in str(again)
    assert "flaky.png" in ProposalCache(str(out)).failed

    retried = _run(items, out, retry_failed=True)
    assert (retried.done, retried.skipped, retried.failed) == (1, 1, {})
    cache = ProposalCache(str(out))
    assert cache.failed == {} and cache.size("flaky.png") == (128, 160)
    assert len(cache["flaky.png"]) > 0

    # the tool: a failure that stays a failure is recorded again with its latest reason
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not an image")
    tool = load_tool("generate_proposals")
    args = ["--images", str(tmp_path / "imgs"), "--out", str(out), "--backend", BACKEND]
    capsys.readouterr()
    for extra in ([], [], ["--retry-failed"]):
        tool.main(args + ["--workers", "1", "--no-progress"] + extra)
    printed = capsys.readouterr().out.split("images done")
    assert printed[1].startswith(" 0, skipped 2 (already cached 2, previously failed 0)")
    assert printed[2].startswith(" 0, skipped 3 (already cached 2, previously failed 1")
    assert printed[3].startswith(" 0, skipped 2 (already cached 2, previously failed 0)")
    assert all("empty 0, failed 1;" in p for p in (printed[1], printed[3]))
    assert "empty 0, failed 0;" in printed[2]
    assert list(ProposalCache(str(out)).failed) == ["bad.png"]


@dataclass(frozen=True)
class KillingFilter(ProposalFilter):
    """SoCo's filter, except that the worker dies on an image of KILL_SIZE."""

    how: str = "sigkill"

    def __call__(self, boxes_xywh, image_size):
        if tuple(image_size) == KILL_SIZE:
            if self.how == "sigkill":  # what the out-of-memory killer does
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3)
        return super().__call__(boxes_xywh, image_size)


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_dead_worker_fails_the_job_and_keeps_finished_work(tmp_path, how):
    goods = [
        (f"good{i}.png", _save_photo(tmp_path / f"good{i}.png", 64 + 8 * i, 80)) for i in range(6)
    ]
    killer = ("killer.png", _save_photo(tmp_path / "killer.png", *KILL_SIZE))
    out = tmp_path / "cache"
    filt = KillingFilter(how=how)
    with pytest.raises(WorkerDiedError, match="worker process died.*killer.png.*rerun") as info:
        _run(goods + [killer], out, filt=filt, workers=2, chunk_size=100)
    err = info.value
    assert "killer.png" in err.in_flight
    assert err.saved >= len(goods) + 1 - 2 * 2  # at most 2 images per worker in flight
    cache = ProposalCache(str(out))
    # every image handed back before the death is saved (the chunk was not full)
    assert len(cache) == err.saved
    assert set(cache.keys()) | set(err.in_flight) == {k for k, _ in goods} | {"killer.png"}
    assert set(cache.keys()).isdisjoint(err.in_flight)
    # the lock was released and a rerun resumes
    rerun = _run(goods, out, filt=filt, workers=2)
    assert rerun.skipped == len(cache) and rerun.done == len(goods) - len(cache)
    assert sorted(ProposalCache(str(out)).keys()) == sorted(k for k, _ in goods)


# ---------------------------------------------------------------- one writer per shard

_HOLD = """
import sys
from d2ext.proposals import ProposalWriter
writer = ProposalWriter(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def test_second_writer_on_a_shard_is_refused_and_a_stale_lock_taken_over(tmp_path, caplog):
    out = str(tmp_path / "cache")
    with ProposalWriter(out, chunk_size=1) as first:
        first.add("x", (50, 50), np.zeros((0, 4)))
        with pytest.raises(CacheLockedError, match=f"in use by PID {os.getpid()}"):
            ProposalWriter(out, chunk_size=1)
        ProposalWriter(out, 1, 2).close()  # another shard is free
    ProposalWriter(out).close()  # released

    photo = _save_photo(tmp_path / "imgs" / "rgb.png")
    out = str(tmp_path / "cache2")
    _run([("rgb.png", photo)], out)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, out], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert holder.stdout.readline().strip() == b"ready"
        with pytest.raises(CacheLockedError, match=f"in use by PID {holder.pid}"):
            ProposalWriter(out)
        tool = load_tool("generate_proposals")
        with pytest.raises(SystemExit, match=f"in use by PID {holder.pid}"):
            tool.main(["--images", str(tmp_path / "imgs"), "--out", out, "--backend", BACKEND])
        with pytest.raises(CacheLockedError, match=f"in use by PID {holder.pid}"):
            _run([("rgb.png", photo)], out, filt=ALIGNDET_FILTER, overwrite=True)
        assert len(ProposalCache(out)) == 1  # not deleted under its writer
    finally:
        holder.kill()  # kill -9: the lock file still names it
        holder.wait()
    lock = os.path.join(out, "shard-00000-of-00001", ".lock")
    assert open(lock).read().split()[0] == str(holder.pid)
    with caplog.at_level(logging.WARNING, logger="d2ext.proposals.cache"):
        with ProposalWriter(out) as writer:
            writer.add("y", (50, 50), np.zeros((0, 4)))
    assert f"stale lock {lock} of PID {holder.pid} (no longer running)" in caplog.text
    assert sorted(ProposalCache(out).keys()) == ["rgb.png", "y"]


def test_lock_by_pid_alone_where_flock_is_missing(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = str(tmp_path / "cache")
    ProposalWriter(out).close()
    lock = os.path.join(out, "shard-00000-of-00001", ".lock")
    with open(lock, "w") as f:
        f.write(f"{os.getppid()}\n")  # a live process of this host
    with pytest.raises(CacheLockedError, match=f"in use by PID {os.getppid()} "):
        ProposalWriter(out)
    with open(lock, "w") as f:
        f.write(f"{os.getppid()} some-other-host\n")  # cannot tell: kept
    with pytest.raises(CacheLockedError, match=f"PID {os.getppid()} on host some-other-host"):
        ProposalWriter(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(lock, "w") as f:
        f.write(f"{dead.pid}\n")
    with caplog.at_level(logging.WARNING, logger="d2ext.proposals.cache"):
        ProposalWriter(out).close()
    assert f"of PID {dead.pid} (no longer running)" in caplog.text


# ---------------------------------------------------------------- permissions


@pytest.mark.parametrize("umask", [0o002, 0o022])
def test_cache_folders_and_files_get_the_users_umask(tmp_path, umask):
    photo = _save_photo(tmp_path / "rgb.png")
    out = tmp_path / "cache"
    old = os.umask(umask)
    try:
        _run([("rgb.png", photo)], out)
        cache_to_coco(ProposalCache(str(out)), str(tmp_path / "coco.json"))
    finally:
        os.umask(old)
    folders, files = [str(out)], [str(tmp_path / "coco.json")]
    for folder, dirs, names in os.walk(out):
        folders += [os.path.join(folder, d) for d in dirs]
        files += [os.path.join(folder, n) for n in names]
    for path in folders:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~umask, path
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path
    assert len(folders) == 3 and len(files) == 1 + 1 + 1 + 5  # coco, settings, lock, chunk
