"""d2ext.model_zoo: names, paths, errors, the installed (package-data) layout; the layout rules of
the configs and of d2ext.projects; values derived from the batch size; AlignDet's recipe map."""

import ast
import glob
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import RetinaNet

import d2ext.model_zoo as model_zoo
from d2ext.model_zoo import available_configs, get_config, get_config_file
from d2ext.model_zoo._sources import copy_configs

from ..helpers import REPO
from .test_configs import _canonical

PAPERS = sorted(
    os.path.basename(os.path.dirname(p))
    for p in glob.glob(os.path.join(REPO, "projects/*/configs"))
)


def test_names_map_to_checkout_files():
    assert set(PAPERS) == {"AlignDet", "CoDETR", "ScaleDet", "SoCo", "imTED"}
    assert get_config_file("CoDETR/co_deformable_detr_R50_12ep_coco.py") == os.path.join(
        REPO, "projects/CoDETR/configs/co_deformable_detr_R50_12ep_coco.py"
    )
    assert get_config_file("common/optim.py") == os.path.join(REPO, "configs/common/optim.py")
    on_disk = {
        os.path.relpath(p, os.path.join(REPO, "configs"))
        for p in glob.glob(os.path.join(REPO, "configs/*/**/*.py"), recursive=True)
    }
    for paper in PAPERS:
        folder = os.path.join(REPO, "projects", paper, "configs")
        on_disk |= {
            f"{paper}/{os.path.relpath(p, folder)}"
            for p in glob.glob(os.path.join(folder, "**/*.py"), recursive=True)
        }
    assert set(available_configs()) == on_disk


def test_unknown_name_lists_available():
    with pytest.raises(ValueError) as err:
        get_config_file("CoDETR/co_deformable_detr_R50_12ep.py")
    msg = str(err.value)
    assert (
        "'CoDETR/co_deformable_detr_R50_12ep_coco.py'" in msg.split("Available")[0]
    )  # close match
    assert all(name in msg for name in available_configs())


def test_installed_package_data(tmp_path, monkeypatch):
    """The build's copy (copy_configs) outside any checkout: every config loads from it alone
    (relative imports stay inside the copied folders) and equals the checkout's."""
    names = available_configs()
    expected = {n: _canonical(get_config(n)) for n in names}
    data = tmp_path / "site-packages" / "d2ext" / "model_zoo" / "configs"
    assert copy_configs(REPO, str(data)) == names
    monkeypatch.setattr(model_zoo, "_REPO", str(tmp_path / "site-packages"))
    monkeypatch.setattr(model_zoo, "_PACKAGE_CONFIGS", str(data))
    assert available_configs() == names
    assert get_config_file("SoCo/soco_R18_FPN_4conv1fc_demo.py") == str(
        data / "SoCo" / "soco_R18_FPN_4conv1fc_demo.py"
    )
    for name in names:
        assert _canonical(get_config(name)) == expected[name], name
    monkeypatch.setattr(model_zoo, "_PACKAGE_CONFIGS", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="No d2ext model-zoo configs found"):
        get_config_file("common/train.py")


def _imports(path):
    """(module, level, names) of every import statement of a Python file."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0, []
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, [a.name for a in node.names]


def _get_config_names(path):
    """String arguments of every ``get_config(...)`` / ``get_config_file(...)`` call."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
            "get_config",
            "get_config_file",
        ):
            if node.args and isinstance(node.args[0], ast.Constant):
                yield node.args[0].value


def _absolute_imports(path, package):
    """Absolute names of every module a file of ``package`` imports (``from a import b`` gives
    ``a`` and ``a.b``, as ``b`` may be a submodule)."""
    for module, level, names in _imports(path):
        if level:
            base = package.split(".")[: len(package.split(".")) - (level - 1)]
            module = ".".join(base + ([module] if module else []))
        yield module
        yield from (f"{module}.{n}" for n in names)


def test_no_paper_package_imports_another():
    projects = os.path.join(REPO, "d2ext", "projects")
    papers = sorted(
        d for d in os.listdir(projects) if os.path.isfile(os.path.join(projects, d, "__init__.py"))
    )
    assert {"aligndet", "codetr", "imted", "scaledet", "soco"} <= set(papers)
    bad = []
    for path in glob.glob(os.path.join(projects, "*", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, os.path.join(REPO))[: -len(".py")].split(os.sep)
        package = ".".join(rel[:-1])  # what a level-1 relative import refers to
        paper = rel[2]
        for name in _absolute_imports(path, package):
            parts = name.split(".")
            if parts[:2] == ["d2ext", "projects"] and len(parts) > 2 and parts[2] != paper:
                bad.append((os.path.relpath(path, REPO), name))
    assert not bad, bad


def test_package_import_resolution(tmp_path):
    """The resolver above turns relative imports of a paper package into absolute names."""
    path = tmp_path / "x.py"
    path.write_text("from ..codetr import modeling\nfrom . import loss\nimport torch\n")
    names = set(_absolute_imports(str(path), "d2ext.projects.aligndet"))
    assert {"d2ext.projects.codetr", "d2ext.projects.codetr.modeling"} <= names
    assert {"d2ext.projects.aligndet.loss", "torch"} <= names


def test_configs_import_only_inside_their_folder():
    """Paper configs reach shared blocks through d2ext.model_zoo, never through relative imports
    above their own configs folder, and never load another paper's configs; root configs load
    no paper config."""
    bad = []
    roots = [(os.path.join(REPO, "configs"), None)] + [
        (os.path.join(REPO, "projects", p, "configs"), p) for p in PAPERS
    ]
    for root, paper in roots:
        for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
            rel_dir = os.path.relpath(os.path.dirname(path), root)
            depth = 0 if rel_dir == "." else rel_dir.count(os.sep) + 1
            if paper is None:
                depth -= 1  # configs/<folder>/... : the folder is the package root
            for module, level, _ in _imports(path):
                if level and level - 1 > depth:
                    bad.append((path, "." * level + module))
                if level == 0 and module.split(".")[0] in ("projects", "configs"):
                    bad.append((path, module))
            for name in _get_config_names(path):
                first = name.split("/")[0]
                if first in PAPERS and first != paper:
                    bad.append((path, name))
    assert not bad, bad


def test_rule_checker_catches_climbing_import(tmp_path):
    """The import walker above sees a relative import that leaves the configs folder."""
    path = tmp_path / "x.py"
    path.write_text("from ....configs.common.train import train\nfrom .common.a import b\n")
    assert [(m, lvl) for m, lvl, _ in _imports(str(path))] == [
        ("configs.common.train", 4),
        ("common.a", 1),
    ]
    path.write_text('from d2ext.model_zoo import get_config\nm = get_config("CoDETR/x.py")\n')
    assert list(_get_config_names(str(path))) == ["CoDETR/x.py"]


def _soco_optimizer_and_schedule(overrides):
    cfg = get_config("SoCo/soco_R50_FPN_4conv1fc_in1k_100ep.py")
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    cfg.optimizer.params.model = torch.nn.Linear(4, 4)
    return cfg, instantiate(cfg.optimizer), instantiate(cfg.lr_multiplier)


def _in_warmup(sched, it, max_iter):
    """True while the multiplier still rises (the warmup; the cosine after it falls)."""
    return sched((it + 1) / max_iter) > sched(it / max_iter) + 1e-9


def test_soco_lr_and_warmup_follow_batch_size():
    cfg, opt, sched = _soco_optimizer_and_schedule([])
    max_iter = cfg.train.max_iter
    assert cfg.dataloader.train.total_batch_size == 2048
    assert all(g["lr"] == 8.0 for g in opt.param_groups)  # 1.0 x 2048 / 256
    # 10 epochs of ImageNet at 2048: 6255 iterations
    assert _in_warmup(sched, 6254, max_iter) and not _in_warmup(sched, 6256, max_iter)

    cfg, opt, sched = _soco_optimizer_and_schedule(["dataloader.train.total_batch_size=512"])
    assert all(g["lr"] == 2.0 for g in opt.param_groups)  # 1.0 x 512 / 256
    warmup = 10 * 1281167 // 512  # 25022
    assert _in_warmup(sched, warmup - 1, max_iter) and not _in_warmup(sched, warmup + 1, max_iter)
    # the derived values survive save -> reload
    cfg = get_config("SoCo/soco_R50_FPN_4conv1fc_in1k_400ep.py")
    cfg.dataloader.train.total_batch_size = 1024
    assert instantiate(cfg.optimizer.lr) == 4.0
    assert instantiate(cfg.lr_multiplier.warmup_iter) == 10 * 1281167 // 1024


def test_mae_demo_lr_follows_batch_size():
    cfg = get_config("imTED/mae_vit_tiny_demo.py")
    assert instantiate(cfg.optimizer.lr) == 1.5e-4 * 32 / 256 * 4
    cfg.dataloader.train.total_batch_size = 64
    cfg.optimizer.params.model = torch.nn.Linear(4, 4)
    opt = instantiate(cfg.optimizer)
    assert all(g["lr"] == pytest.approx(1.5e-4 * 64 / 256 * 4) for g in opt.param_groups)


def test_aligndet_recipe_by_class():
    from d2ext.projects.aligndet import AlignDet, AlignDetRetinaNet
    from d2ext.projects.aligndet.builders import (
        ALIGNDET_RECIPES,
        aligndet_model,
        aligndet_retinanet_recipe,
    )

    assert ALIGNDET_RECIPES[RetinaNet] is aligndet_retinanet_recipe
    cfg = get_config("AlignDet/aligndet_retinanet_R18_FPN_demo.py")  # a root for ${train.*}
    cfg.model = aligndet_model(
        get_config("common/models/retinanet_R18_FPN_demo.py").model, num_samples=64
    )
    model = instantiate(cfg.model)
    assert isinstance(model, AlignDet) and type(model.online) is AlignDetRetinaNet
    assert model.online.num_classes == 1 and model.online.num_samples == 64

    class MyRetinaNet(RetinaNet):
        pass

    block = get_config("common/models/retinanet_R18_FPN_demo.py").model
    block._target_ = MyRetinaNet
    with pytest.raises(ValueError, match="no recipe for .*MyRetinaNet.*supported: .*RetinaNet"):
        aligndet_model(block)
    with pytest.raises(TypeError):  # R-CNN options are not RetinaNet's
        aligndet_model(get_config("common/models/retinanet_R18_FPN_demo.py").model, roi_samples=128)
