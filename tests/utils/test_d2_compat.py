"""d2ext.utils.d2_compat: every private detectron2 name d2ext relies on exists, with the
expected signature, in the installed detectron2; no other file imports one."""

import ast
import glob
import importlib
import inspect
import os
import re

import pytest
from detectron2.utils.registry import locate

from d2ext.utils import d2_compat

from ..helpers import REPO

COMPAT = os.path.join("d2ext", "utils", "d2_compat.py")


def _params(obj) -> str:
    """A signature without annotations: (a, b=1, *, c=None)."""
    parts, star = [], False
    for p in inspect.signature(obj).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_POSITIONAL:
            star = True
            parts.append(f"*{p.name}")
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return "(" + ", ".join(parts) + ")"


def _resolve(dotted: str):
    obj = locate(dotted)
    assert obj is not None, f"{dotted} is not in the installed detectron2"
    return obj


@pytest.mark.parametrize("name", sorted(d2_compat.PRIVATE_FUNCTIONS))
def test_private_function_exists_with_signature(name):
    dotted, params = d2_compat.PRIVATE_FUNCTIONS[name]
    assert dotted.startswith("detectron2.") and dotted.rsplit(".", 1)[1].startswith("_")
    private = _resolve(dotted)
    assert getattr(d2_compat, name) is private
    assert _params(private) == params


@pytest.mark.parametrize(
    "owner, member, params",
    [(o, m, p) for o, m, p, _ in d2_compat.PRIVATE_MEMBERS],
    ids=[f"{o.rsplit('.', 1)[1]}.{m}" for o, m, _, _ in d2_compat.PRIVATE_MEMBERS],
)
def test_private_member_exists(owner, member, params):
    obj = _resolve(owner)
    if params is not None:  # a method with the signature d2ext overrides / calls
        assert _params(getattr(obj, member)) == params
    elif inspect.ismodule(obj):
        assert hasattr(obj, member)
    else:  # data a detectron2 class sets on its instances (or on itself)
        d2_classes = [c for c in obj.__mro__ if c.__module__.startswith("detectron2")]
        sources = [inspect.getsource(c) for c in d2_classes]
        assert any(member in vars(c) for c in obj.__mro__) or any(
            re.search(rf"self\.{member}\s*(:[^=]*)?=", s) for s in sources
        ), f"{owner} no longer sets {member}"


def _files():
    for folder in ("d2ext", "tools", "configs", "projects", "benchmarks"):
        for path in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True):
            yield os.path.relpath(path, REPO)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_detectron2_uses(source: str) -> list[str]:
    """Imports of private detectron2 names / modules, and private attributes read from a name
    bound to a detectron2 import."""
    tree = ast.parse(source)
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "detectron2":
            if any(_private(p) for p in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module}")
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if _private(alias.name):
                    found.append(f"line {node.lineno}: {node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "detectron2":
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append(f"line {node.lineno}: import {alias.name}")
                    bound.add(alias.asname or "detectron2")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_scan_finds_private_uses():
    bad = (
        "from detectron2.modeling.poolers import ROIPooler, _create_zeros\n"
        "import detectron2.solver.build as b\n"
        "b._create_gradient_clipper(None)\n"
        "from detectron2.layers._private import x\n"
        "ROIPooler._x\n"
    )
    assert len(private_detectron2_uses(bad)) == 4
    ok = "from detectron2.modeling.poolers import ROIPooler\nself._x = ROIPooler\n"
    assert private_detectron2_uses(ok) == []


def test_no_other_file_imports_a_private_detectron2_name():
    offenders = {}
    for path in _files():
        if path == COMPAT:
            continue
        with open(os.path.join(REPO, path)) as f:
            uses = private_detectron2_uses(f.read())
        if uses:
            offenders[path] = uses
    assert not offenders, f"import these through d2ext.utils.d2_compat: {offenders}"
    with open(os.path.join(REPO, COMPAT)) as f:
        imported = private_detectron2_uses(f.read())
    assert len(imported) == len(d2_compat.PRIVATE_FUNCTIONS)


def _d2ext_modules():
    for path in _files():
        if path.startswith("d2ext" + os.sep):
            yield path[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")


def test_private_members_list_is_complete():
    """Every private member a d2ext subclass of a detectron2 class overrides or uses through
    ``self`` and that a detectron2 base class defines is in PRIVATE_MEMBERS."""
    listed = {m for _, m, _, _ in d2_compat.PRIVATE_MEMBERS}
    unlisted = {}
    for name in _d2ext_modules():
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == name):
                continue
            bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("detectron2")]
            if not bases:
                continue
            tree = ast.parse(inspect.getsource(cls))
            used = {
                n.attr
                for n in ast.walk(tree)
                if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
                and _private(n.attr)
            } | {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            sources = "\n".join(inspect.getsource(b) for b in bases)
            for member in sorted(m for m in used if _private(m)):
                in_base = any(member in vars(b) for b in bases) or re.search(
                    rf"self\.{member}\b", sources
                )
                if in_base and member not in listed:
                    unlisted.setdefault(f"{name}.{cls.__name__}", []).append(member)
    assert not unlisted, f"add to d2ext.utils.d2_compat.PRIVATE_MEMBERS: {unlisted}"
