"""Where each model-zoo config lives in a source tree (standard library only, so ``setup.py``
can load this file before d2ext's dependencies are installed).

Names follow the package-data layout under ``d2ext/model_zoo/configs/``:

- ``<folder>/<file>.py`` for ``configs/<folder>/<file>.py`` (``common/...``, ``baselines/...``);
- ``<Paper>/<file>.py`` for ``projects/<Paper>/configs/<file>.py``.
"""

import os
import shutil


def _python_files(folder: str) -> list[str]:
    """The ``.py`` files under ``folder``, relative to it, ``/``-separated, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, name), folder)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def config_sources(repo_root: str) -> dict[str, str]:
    """Maps every model-zoo name to its file in a source tree.

    Args:
        repo_root: the folder holding ``configs/`` and ``projects/``.

    Returns:
        ``{name: absolute path}`` for every ``.py`` file of ``configs/`` and of
        ``projects/<Paper>/configs/``, names as described in this module's docstring.

    Raises:
        ValueError: when a paper folder has the name of a ``configs/`` folder (their names
            would collide).
    """
    repo_root = os.path.abspath(repo_root)
    sources = {}
    configs = os.path.join(repo_root, "configs")
    if os.path.isdir(configs):
        for rel in _python_files(configs):
            if "/" in rel:  # files sit in folders (common/, baselines/), as names need
                sources[rel] = os.path.join(configs, rel)
    projects = os.path.join(repo_root, "projects")
    papers = sorted(os.listdir(projects)) if os.path.isdir(projects) else []
    for paper in papers:
        folder = os.path.join(projects, paper, "configs")
        if not os.path.isdir(folder):
            continue
        if os.path.isdir(os.path.join(configs, paper)):
            raise ValueError(f"projects/{paper}/configs collides with configs/{paper}/")
        for rel in _python_files(folder):
            sources[f"{paper}/{rel}"] = os.path.join(folder, rel)
    return sources


def copy_configs(repo_root: str, dst: str) -> list[str]:
    """Copies every model-zoo config of a source tree into the package-data layout.

    Args:
        repo_root: the folder holding ``configs/`` and ``projects/``.
        dst: the package-data folder (``<build_lib>/d2ext/model_zoo/configs``); files already
            there are replaced, stale ones removed.

    Returns:
        the copied names.
    """
    sources = config_sources(repo_root)
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    for name, src in sources.items():
        target = os.path.join(dst, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(src, target)
    return sorted(sources)
