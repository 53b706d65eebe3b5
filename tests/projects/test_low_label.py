"""The low-label protocol of the SoCo / AlignDet demos: the 10 % subset, the oracle's
ground-truth proposal cache, and the demo plans (which runs, in which order, on which data and
from which initialisation), checked without training."""

import dataclasses
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch

from d2ext.data.datasets.demo import (
    SHAPES_CLASSES,
    _generate_split,
    _json_path,
    _photos,
    get_split,
    subset_indices,
    write_ground_truth_proposals,
)

from ..helpers import REPO, demo_data_root, load_tool

sys.path.insert(0, os.path.join(REPO, "projects"))
import demo_runs  # noqa: E402


def _load(paper: str):
    path = os.path.join(REPO, "projects", paper, "run_demo.py")
    spec = importlib.util.spec_from_file_location(f"run_demo_{paper.lower()}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soco_demo = _load("SoCo")
aligndet_demo = _load("AlignDet")


# ---- the 10 % subset --------------------------------------------------------------------------


def _dicts(cats_per_image):
    return [
        {"image_id": i, "annotations": [{"category_id": c} for c in cats]}
        for i, cats in enumerate(cats_per_image)
    ]


def test_subset_indices_deterministic_with_every_class():
    rng = np.random.RandomState(0)
    cats = [[int(c) for c in rng.randint(0, 4, size=rng.randint(1, 4))] for _ in range(200)]
    cats[137] = [4]  # class 4 appears in one image only
    dicts = _dicts(cats)
    a = subset_indices(dicts, 0.1, seed=0, num_classes=5)
    assert a == subset_indices(dicts, 0.1, seed=0, num_classes=5)
    assert len(a) == 20 and a == sorted(a) and len(set(a)) == 20
    assert 137 in a
    assert {c for i in a for c in cats[i]} == set(range(5))
    assert subset_indices(dicts, 0.1, seed=1, num_classes=5) != a
    assert subset_indices(dicts, 1.0, seed=0, num_classes=5) == list(range(200))
    with pytest.raises(ValueError, match="no image"):
        subset_indices(dicts, 0.1, seed=0, num_classes=6)
    with pytest.raises(ValueError, match="fraction"):
        subset_indices(dicts, 0.0, seed=0, num_classes=5)


def test_registered_10pct_split_is_a_fixed_subset_with_every_class():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    demo_data_root()
    full = DatasetCatalog.get("d2ext_demo_shapes_train")
    sub = DatasetCatalog.get("d2ext_demo_shapes_train_10pct")
    assert len(sub) == round(0.1 * len(full)) == 40
    ids = [d["image_id"] for d in sub]
    assert ids == [d["image_id"] for d in DatasetCatalog.get("d2ext_demo_shapes_train_10pct")]
    by_id = {d["image_id"]: d for d in full}
    assert all(by_id[d["image_id"]] == d for d in sub)
    cats = {a["category_id"] for d in sub for a in d["annotations"]}
    assert cats == set(range(len(SHAPES_CLASSES)))
    meta = MetadataCatalog.get("d2ext_demo_shapes_train_10pct")
    assert meta.thing_classes == list(SHAPES_CLASSES)
    # what the fine-tuning config's loader calls
    from detectron2.data import get_detection_dataset_dicts

    assert len(get_detection_dataset_dicts("d2ext_demo_shapes_train_10pct")) == 40


# ---- the oracle's proposal cache ----------------------------------------------------------


@pytest.fixture(scope="module")
def gt_pool(tmp_path_factory):
    """A 4-image unlabeled pool of the large-object kind, its dataset dicts, their
    ground-truth boxes (continuous XYXY from the json's XYWH) and its oracle cache."""
    from d2ext.data.datasets import _load_split

    tmp = tmp_path_factory.mktemp("gt_pool")
    root = str(tmp / "data")
    pool = dataclasses.replace(get_split("d2ext_demo_unlabeled_large"), num_images=4)
    _generate_split(root, pool, _photos())
    coco = json.load(open(_json_path(root, pool)))
    truth = {}
    for d in _load_split(root, pool):
        anns = [a for a in coco["annotations"] if a["image_id"] == d["image_id"]]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32)
        truth[d["image_id"]] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    cache_dir = str(tmp / "gt")
    written = [write_ground_truth_proposals(pool, cache_dir, root) for _ in range(2)]
    return {
        "pool": pool,
        "root": root,
        "dicts": _load_split(root, pool),
        "truth": truth,
        "cache": cache_dir,
        "written": written,
    }


def test_ground_truth_cache_equals_the_boxes_and_feeds_the_pretraining_mapper(gt_pool):
    from detectron2.config import LazyConfig, instantiate

    from d2ext.proposals import DatasetProposals, ProposalCache

    cache_dir, dicts = gt_pool["cache"], gt_pool["dicts"]
    assert gt_pool["written"] == [4, 0]  # resumed: nothing new
    cache = ProposalCache(cache_dir)
    assert cache.settings["backend"] == "ground_truth" and len(cache) == 4
    assert cache.box_convention == "continuous"  # recorded in its settings
    stored = DatasetProposals(cache_dir, key="image_id", convention=None)
    reader = DatasetProposals(cache_dir, key="image_id")  # what the pretraining mappers read
    for d in dicts:
        expected = gt_pool["truth"][d["image_id"]]
        np.testing.assert_array_equal(stored(d), expected)
        # in the mappers' convention: inclusive pixels, x2 = the last pixel
        np.testing.assert_array_equal(reader(d), expected - np.float32([0, 0, 1, 1]))
        assert cache.size(str(d["image_id"])) == (d["height"], d["width"])
    # the SoCo demo pretraining's own mapper reads it: every view's boxes come from them
    cfg = LazyConfig.load(soco_demo.PRETRAIN)
    cfg.dataloader.train.mapper.proposals.cache_dir = cache_dir
    mapper = instantiate(cfg.dataloader.train.mapper)
    out = mapper(dict(dicts[0]))
    assert out is not None
    # and AlignDet's demo pretraining mapper
    pre = os.path.join(aligndet_demo.CONFIGS, aligndet_demo.DETECTORS["faster_rcnn"][0])
    cfg = LazyConfig.load(pre)
    cfg.dataloader.train.mapper.proposals.cache_dir = cache_dir
    out = instantiate(cfg.dataloader.train.mapper)(dict(dicts[0]))
    assert out is not None
    # the cache of another source at the same place is refused
    from d2ext.proposals import CacheSettingsError, ProposalWriter

    with pytest.raises(CacheSettingsError):
        ProposalWriter(cache_dir, settings={"format": 1, "backend": "d2ext"})


def test_pretraining_mappers_get_exactly_the_ground_truth_boxes_of_an_oracle_cache(gt_pool):
    """The boxes the SoCo and AlignDet demo mappers make from the oracle's cache, before any
    jitter or augmentation, are the ground-truth boxes (not 1 px larger)."""
    from detectron2.config import LazyConfig, instantiate

    cache_dir, dicts, truth = gt_pool["cache"], gt_pool["dicts"], gt_pool["truth"]
    cfg = LazyConfig.load(soco_demo.PRETRAIN)
    m = cfg.dataloader.train.mapper
    m.proposals.cache_dir = cache_dir
    m.jitter_prob, m.flip_prob, m.colour_augmentation, m.cutout_prob = 0.0, 0.0, False, 0.0
    soco = instantiate(m)
    pre = os.path.join(aligndet_demo.CONFIGS, aligndet_demo.DETECTORS["faster_rcnn"][0])
    cfg = LazyConfig.load(pre)
    m = cfg.dataloader.train.mapper
    m.proposals.cache_dir = cache_dir
    m.augmentations, m.nms_iou = [], None
    aligndet = instantiate(m)
    for d in dicts:
        gt = truth[d["image_id"]]
        h, w = d["height"], d["width"]
        assert (gt[:, 2] <= w).all() and (gt[:, 3] <= h).all()
        # SoCo: the image's boxes (inclusive pixels, its convention), and V1's output boxes
        # (the whole image resized to the view, continuous)
        inclusive = soco._proposals(dict(d), h, w)
        np.testing.assert_array_equal(inclusive + [0, 0, 1, 1], gt)
        torch.manual_seed(0)
        out = soco(dict(d))
        size = soco.sizes[0]
        scale = np.float32([size / w, size / h, size / w, size / h])
        for lst in (0, 2):  # V1's boxes of the (V1, V2) and (V1, V3) pairs
            boxes, ids = out["boxes"][lst].numpy(), out["ids"][lst].numpy()
            np.testing.assert_allclose(boxes, gt[ids - 1] * scale, rtol=0, atol=1e-4)
        # AlignDet: the pseudo boxes, and both views' boxes without augmentation
        np.testing.assert_array_equal(aligndet.pseudo_boxes(dict(d), h, w), gt)
        out = aligndet(dict(d))
        for view in out["views"]:
            inst = view["instances"]
            np.testing.assert_array_equal(inst.gt_boxes.tensor.numpy(), gt[inst.gt_ids.numpy()])
            assert len(inst) == len(gt)


def test_ground_truth_cache_without_a_recorded_convention_is_read_and_rewritten(tmp_path, gt_pool):
    """A ground-truth cache written before the box convention was recorded is read as
    continuous boxes, and the writer rewrites it with the record."""
    import shutil

    from d2ext.proposals import DatasetProposals, ProposalCache
    from d2ext.proposals.cache import SETTINGS_FILE

    old = str(tmp_path / "old")
    shutil.copytree(gt_pool["cache"], old)
    with open(os.path.join(old, SETTINGS_FILE)) as f:
        settings = json.load(f)
    del settings["box_convention"]
    with open(os.path.join(old, SETTINGS_FILE), "w") as f:
        json.dump(settings, f)
    d = gt_pool["dicts"][0]
    gt = gt_pool["truth"][d["image_id"]]
    assert ProposalCache(old).box_convention == "continuous"
    np.testing.assert_array_equal(DatasetProposals(old)(d), gt - np.float32([0, 0, 1, 1]))
    assert write_ground_truth_proposals(gt_pool["pool"], old, gt_pool["root"]) == 4
    assert ProposalCache(old).settings["box_convention"] == "continuous"
    np.testing.assert_array_equal(DatasetProposals(old, convention="continuous")(d), gt)


# ---- the plans ------------------------------------------------------------------------------


def _soco_plan(tmp_path, *argv):
    args = soco_demo.resolve(soco_demo.build_parser().parse_args([*argv, "--out", str(tmp_path)]))
    return args, soco_demo.build_plan(args, str(tmp_path / "proposals"))


def _override(step, key):
    values = [o.split("=", 1)[1] for o in step.overrides if o.startswith(key + "=")]
    assert len(values) <= 1
    return values[0] if values else None


def _diagnostics_args(step):
    """The diagnostics tool's parsed arguments for a plan's diagnostics step, as
    :func:`demo_runs.run_diagnostics` calls it."""
    tool = load_tool("pretrain_diagnostics")
    return tool.build_parser().parse_args(["--config", step.config, *step.overrides])


def _tool_config(args):
    """The config the diagnostics tool builds from its arguments."""
    from detectron2.config import LazyConfig

    return LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)


def _check_low_label(steps, arms, seeds, iters):
    finetunes = [s for s in steps if s.kind == "finetune"]
    keys = [(s.arm, s.split, s.seed) for s in finetunes]
    assert sorted(keys) == sorted(
        (a, sp, sd) for a in arms for sp in demo_runs.LOW_LABEL_SPLITS for sd in seeds
    )
    assert len({s.out for s in finetunes}) == len(finetunes)
    for s in finetunes:
        assert _override(s, "dataloader.train.dataset.names") == demo_runs.LOW_LABEL_SPLITS[s.split]
        assert _override(s, "train.max_iter") == str(iters)  # the same budget for both splits
        assert _override(s, "train.seed") == str(s.seed)
        assert _override(s, "train.init_checkpoint") == s.init
    # seed by seed: every run of seed 0 before any of seed 1
    assert [s.seed for s in finetunes] == sorted(s.seed for s in finetunes)
    return finetunes


def test_soco_default_plan(tmp_path):
    args, steps = _soco_plan(tmp_path)
    assert args.seeds == [0, 1, 2] and args.finetune_iters == soco_demo.FINETUNE_ITERS
    finetunes = _check_low_label(steps, ["SoCo", "random", "oracle"], [0, 1, 2], 100)
    assert len(finetunes) == 18
    index = {id(s): n for n, s in enumerate(steps)}
    by_kind = {}
    for s in steps:
        by_kind.setdefault(s.kind, []).append(s)
    (proposals,), (box_cache,) = by_kind["proposals"], by_kind["box_cache"]
    pretrains = {s.arm: s for s in by_kind["pretrain"]}
    converts = {s.arm: s for s in by_kind["convert"]}
    pool = "d2ext_demo_unlabeled_large"
    assert proposals.dataset == pool and proposals.arm == "ratio3size0308"
    assert box_cache.dataset == pool and box_cache.out != proposals.out
    assert (
        _override(pretrains["SoCo"], "dataloader.train.mapper.proposals.cache_dir") == proposals.out
    )
    assert (
        _override(pretrains["oracle"], "dataloader.train.mapper.proposals.cache_dir")
        == box_cache.out
    )
    for label, pre in pretrains.items():
        assert pre.config == soco_demo.PRETRAIN  # the same pretraining config for both
        assert _override(pre, "dataloader.train.dataset.names") == pool
        assert converts[label].init == pre.out
        assert index[id(pre)] < index[id(converts[label])]
        users = [s for s in finetunes if s.arm == label]
        assert users and all(s.init == converts[label].out for s in users)
        assert all(index[id(converts[label])] < index[id(s)] for s in users)
    assert index[id(proposals)] < index[id(pretrains["SoCo"])]
    assert index[id(box_cache)] < index[id(pretrains["oracle"])]
    assert all(s.init == "" for s in finetunes if s.arm == "random")
    assert all(s.config == soco_demo.FINETUNE for s in finetunes)
    # warmup scaled to the shorter budget (config: 50 of 300)
    assert all(_override(s, "lr_multiplier.warmup_iter") == "17" for s in finetunes)
    (diag,) = by_kind["diagnostics"]
    assert steps[-1] is diag and diag.init == pretrains["SoCo"].out
    assert "--random-control" in diag.overrides
    assert soco_demo.HELDOUT in diag.overrides
    # the tool gets the pretraining's config as pretrained: its overrides, last
    args = _diagnostics_args(diag)
    assert args.opts == list(pretrains["SoCo"].overrides) and args.out == diag.out
    cfg = _tool_config(args)
    assert cfg.dataloader.train.dataset.names == "d2ext_demo_unlabeled_large"
    assert cfg.dataloader.train.mapper.proposals.cache_dir == proposals.out
    assert args.dataset == [soco_demo.HELDOUT] and args.gt_dataset == []


def test_soco_plan_keeps_the_earlier_demo_folders_only_for_its_settings(tmp_path):
    _, steps = _soco_plan(
        tmp_path, "--pool", "small", "--splits", "100pct", "--finetune-iters", "300",
        "--arms", "soco", "random", "--seeds", "0", "1",
    )  # fmt: skip
    outs = {(s.kind, s.arm, s.seed): os.path.relpath(s.out, tmp_path) for s in steps}
    assert outs[("pretrain", "SoCo", None)] == "pretrain"
    assert outs[("convert", "SoCo", None)] == "soco_detectron2.pth"
    assert outs[("finetune", "SoCo", 1)] == "finetune_soco_seed1"
    assert outs[("finetune", "random", 0)] == "finetune_scratch_seed0"
    assert outs[("proposals", "ratio3size0308", None)] == os.path.join(
        "proposals", "soco_unlabeled"
    )
    ft = [s for s in steps if s.kind == "finetune"]
    assert all(_override(s, "lr_multiplier.warmup_iter") is None for s in ft)
    # other settings: other folders, never the earlier ones
    for argv in (("--pool", "large"), ("--finetune-iters", "100"), ("--pretrain-iters", "750")):
        _, other = _soco_plan(tmp_path, "--splits", "100pct", "--finetune-iters", "300", *argv)
        names = {os.path.relpath(s.out, tmp_path) for s in other if s.kind != "diagnostics"}
        if "--pool" in argv or "--pretrain-iters" in argv:
            assert "pretrain" not in names and "finetune_soco_seed0" not in names
        else:
            assert not any(n.startswith("finetune_") for n in names)


def test_soco_quick_and_subsets(tmp_path):
    args, steps = _soco_plan(tmp_path, "--quick", "--arms", "random")
    assert args.seeds == [0] and args.finetune_iters == 20 and args.pretrain_iters == 20
    assert {s.kind for s in steps} == {"finetune"}
    assert [s.split for s in steps] == ["10pct", "100pct"]
    args = soco_demo.resolve(soco_demo.build_parser().parse_args(["--quick"]))
    assert args.out.endswith("soco_demo_quick")
    _, steps = _soco_plan(tmp_path, "--arms", "oracle", "--splits", "10pct", "--no-diagnostics")
    assert {s.kind for s in steps} == {"box_cache", "pretrain", "convert", "finetune"}
    assert {s.arm for s in steps if s.kind == "finetune"} == {"oracle"}


@pytest.mark.parametrize(
    "argv, iters",
    [
        ((), 60),
        (("--detector", "fcos"), 200),
        (("--detector", "retinanet"), 200),
        (("--detector", "fcos", "--finetune-iters", "80"), 80),
        (("--detector", "fcos", "--quick"), 20),
    ],
)
def test_aligndet_budget_is_the_detectors_unless_given(tmp_path, argv, iters):
    args = aligndet_demo.resolve(
        aligndet_demo.build_parser().parse_args(["--out", str(tmp_path), *argv])
    )
    finetunes = [s for s in aligndet_demo.build_plan(args, "p") if s.kind == "finetune"]
    assert finetunes and {_override(s, "train.max_iter") for s in finetunes} == {str(iters)}
    assert all(f"_it{iters}_seed" in s.out for s in finetunes)


def test_aligndet_default_plan(tmp_path):
    args = aligndet_demo.resolve(aligndet_demo.build_parser().parse_args(["--out", str(tmp_path)]))
    steps = aligndet_demo.build_plan(args, str(tmp_path / "proposals"))
    labels = ["AlignDet", "backbone only", "oracle"]
    assert args.detector == "faster_rcnn"
    finetunes = _check_low_label(steps, labels, [0, 1, 2], 60)
    assert len(finetunes) == 18
    assert steps[0].kind == "backbone"
    backbone_only = os.path.join(str(tmp_path), "backbone_only.pth")
    assert all(s.init == backbone_only for s in finetunes if s.arm == "backbone only")
    pretrains = {s.arm: s for s in steps if s.kind == "pretrain"}
    extracts = {s.arm: s for s in steps if s.kind == "extract"}
    box_cache, held_gt = [s for s in steps if s.kind == "box_cache"]
    assert box_cache.dataset == "d2ext_demo_unlabeled"  # AlignDet's default pool
    assert held_gt.dataset == aligndet_demo.HELDOUT and steps[-2] is held_gt
    assert (
        _override(pretrains["oracle"], "dataloader.train.mapper.proposals.cache_dir")
        == box_cache.out
    )
    init = _override(pretrains["AlignDet"], "train.init_checkpoint")
    assert init == _override(pretrains["oracle"], "train.init_checkpoint")
    for label in ("AlignDet", "oracle"):
        assert extracts[label].init == pretrains[label].out
        assert all(s.init == extracts[label].out for s in finetunes if s.arm == label)
    assert os.path.basename(pretrains["AlignDet"].out) == "pretrain"  # the earlier demo's
    diag = steps[-1]
    assert diag.kind == "diagnostics" and "--control-init" in diag.overrides
    assert f"heldout_gt={held_gt.out}" in diag.overrides  # AR@100 against its ground truth
    assert diag.init == pretrains["AlignDet"].out
    # the tool gets the pretraining's config as pretrained: its overrides, last
    args = _diagnostics_args(diag)
    assert args.opts == list(pretrains["AlignDet"].overrides) and args.out == diag.out
    assert args.reference == [f"heldout_gt={held_gt.out}"]
    cfg = _tool_config(args)
    assert cfg.dataloader.train.dataset.names == "d2ext_demo_unlabeled"
    assert cfg.dataloader.train.mapper.proposals.cache_dir == _override(
        pretrains["AlignDet"], "dataloader.train.mapper.proposals.cache_dir"
    )
    # another pool: the tool compares the held-out images with that one
    args = aligndet_demo.resolve(
        aligndet_demo.build_parser().parse_args(["--out", str(tmp_path), "--pool", "large"])
    )
    (diag,) = [s for s in aligndet_demo.build_plan(args, "p") if s.kind == "diagnostics"]
    cfg = _tool_config(_diagnostics_args(diag))
    assert cfg.dataloader.train.dataset.names == "d2ext_demo_unlabeled_large"
    # the earlier demo's fine-tuning folders for its settings (100 %, the config's 300)
    args = aligndet_demo.resolve(
        aligndet_demo.build_parser().parse_args(
            ["--out", str(tmp_path), "--splits", "100pct", "--finetune-iters", "300"]
        )
    )
    names = {os.path.basename(s.out) for s in aligndet_demo.build_plan(args, "p")}
    assert {"finetune_aligndet_seed2", "finetune_baseline_seed0"} <= names


# ---- running and summarising a plan -----------------------------------------------------------


def test_run_plan_skips_finished_steps(tmp_path, capsys):
    steps = [
        demo_runs.Step("finetune", str(tmp_path / "a"), arm="x", split="10pct", seed=0),
        demo_runs.Step("finetune", str(tmp_path / "b"), arm="x", split="10pct", seed=1),
        demo_runs.Step("convert", str(tmp_path / "c.pth")),
        demo_runs.Step("proposals", str(tmp_path / "cache")),
    ]
    os.makedirs(tmp_path / "a")
    (tmp_path / "a" / "eval_results.json").write_text(json.dumps({"bbox": {"AP": 1, "AP50": 2}}))
    (tmp_path / "c.pth").write_bytes(b"")
    ran = []
    actions = dict.fromkeys(("finetune", "convert", "proposals"), ran.append)
    demo_runs.run_plan(steps, actions)
    assert ran == [steps[1], steps[3]]  # proposal caches resume inside themselves
    rows = demo_runs.finetune_rows(steps)
    assert [(r["seed"], r["AP"]) for r in rows] == [(0, 1)]


def test_a_run_without_detections_counts_as_zero_ap(tmp_path, capsys):
    # detectron2's COCOEvaluator writes NaN for every metric when the model detected nothing
    steps = []
    for seed, ap in enumerate((4.0, float("nan"), 8.0)):
        out = tmp_path / f"s{seed}"
        os.makedirs(out)
        metrics = {"AP": ap, "AP50": ap * 2}  # json writes NaN as NaN, as detectron2's does
        (out / "eval_results.json").write_text(json.dumps({"bbox": metrics}))
        steps.append(demo_runs.Step("finetune", str(out), arm="P", split="10pct", seed=seed))
    rows = demo_runs.finetune_rows(steps)
    assert [(r["AP"], r["AP50"], r["no_predictions"]) for r in rows] == [
        (4.0, 8.0, False),
        (0.0, 0.0, True),
        (8.0, 16.0, False),
    ]
    out = demo_runs.low_label_summary(rows, [], "P")
    assert out["table"]["10pct"]["P"]["AP"] == pytest.approx([4.0, 4.0])
    assert "10pct P seed 1: no detection, counted as 0 AP" in capsys.readouterr().out


def test_low_label_summary_mean_std_and_lead(capsys):
    rows = [
        {"init": arm, "split": split, "seed": seed, "AP": ap, "AP50": ap + 10}
        for arm, split, aps in (
            ("P", "10pct", (10.0, 12.0, 14.0)),
            ("Q", "10pct", (1.0, 1.5, 2.0)),
            ("R", "10pct", (5.0, 5.0, 8.0)),
            ("P", "100pct", (20.0, 21.0, 22.0)),
            ("R", "100pct", (19.0, 22.0, 25.0)),
        )
        for seed, ap in enumerate(aps)
    ]
    out = demo_runs.low_label_summary(rows, ["P", "Q"], "R")
    assert out["table"]["10pct"]["P"]["AP"] == pytest.approx([12.0, 2.0])
    assert out["table"]["10pct"]["R"]["AP"] == pytest.approx([6.0, 3**0.5])
    assert out["table"]["10pct"]["P"]["seeds"] == [0, 1, 2]
    assert out["lead"]["10pct"]["P"]["AP"] == pytest.approx(6.0)
    assert out["lead"]["10pct"]["P"]["beyond_1_std"]
    assert out["lead"]["100pct"]["P"]["AP"] == pytest.approx(-1.0)
    assert not out["lead"]["100pct"]["P"]["beyond_1_std"]
    assert not out["lead"]["100pct"]["P"]["behind_1_std"]  # -1 against a std of 3: within
    assert not out["lead"]["10pct"]["P"]["behind_1_std"]
    q = out["lead"]["10pct"]["Q"]  # -4.5 against a std of 3 ** 0.5
    assert q["AP"] == pytest.approx(-4.5) and q["behind_1_std"] and not q["beyond_1_std"]
    printed = capsys.readouterr().out
    assert "Q - R: AP -4.50, AP50 -4.50 (behind by more than one seed std, 1.73)" in printed
    assert "P - R: AP -1.00, AP50 -1.00 (within one seed std, 3.00)" in printed


def test_schedule_overrides_scale_warmup():
    own, extra = demo_runs.schedule_overrides(soco_demo.FINETUNE, 300)
    assert own == 300 and extra == ()
    assert demo_runs.schedule_overrides(soco_demo.FINETUNE, 150)[1] == (
        "lr_multiplier.warmup_iter=25",
    )


def test_diagnostics_step_is_skipped_without_the_tool(tmp_path, monkeypatch, capsys):
    step = demo_runs.diagnostics_step("cfg.py", str(tmp_path / "pre"), str(tmp_path / "d"))
    assert step.overrides[:3] == (
        "--checkpoint",
        str(tmp_path / "pre" / "model_final.pth"),
        "--random-control",
    )
    monkeypatch.setattr(demo_runs, "DIAGNOSTICS_TOOL", str(tmp_path / "no_such_tool.py"))
    demo_runs.run_diagnostics(step)
    assert "pretraining diagnostics skipped" in capsys.readouterr().out
    assert demo_runs.read_diagnostics(step) == {"skipped": "no tools/pretrain_diagnostics.py"}
    os.makedirs(step.out)
    (tmp_path / "d" / "pretrain_diagnostics.json").write_text('{"retrieval": {}}')
    assert step.done() and demo_runs.read_diagnostics(step) == {"retrieval": {}}


def test_failing_diagnostics_are_recorded_and_retried(tmp_path, monkeypatch):
    tool = tmp_path / "tool.py"
    tool.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr(demo_runs, "DIAGNOSTICS_TOOL", str(tool))
    step = demo_runs.diagnostics_step("cfg.py", str(tmp_path / "pre"), str(tmp_path / "d"))
    demo_runs.run_diagnostics(step)  # does not raise: the demo still writes its tables
    assert not step.done()
    assert demo_runs.read_diagnostics(step) == {"failed": "tool.py exited with status 3"}
    out = tmp_path / "d" / "pretrain_diagnostics.json"
    tool.write_text(f"open({str(out)!r}, 'w').write('{{}}')\n")
    demo_runs.run_diagnostics(step)
    assert step.done() and demo_runs.read_diagnostics(step) == {}
