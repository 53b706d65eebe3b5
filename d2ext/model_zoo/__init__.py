"""d2ext's model zoo: every LazyConfig of the repository by name, from a source checkout or
from an installed package, as ``detectron2.model_zoo.get_config`` does for detectron2's.

Names: ``<Paper>/<file>.py`` for ``projects/<Paper>/configs/<file>.py`` (for example
``"CoDETR/co_deformable_detr_R50_12ep_coco.py"``) and ``<folder>/<file>.py`` for
``configs/<folder>/<file>.py`` (``"common/train.py"``, ``"baselines/faster_rcnn_R18_FPN_demo.py"``).

In a source checkout (``setup.py``, ``configs/`` and ``projects/`` beside the ``d2ext`` package)
the files are read where they are, so edits apply at once; in an installed wheel they are the
package data under ``d2ext/model_zoo/configs/`` that the build copies there
(``_sources.copy_configs``).
"""

import difflib
import os

from ._sources import _python_files, config_sources

__all__ = ["available_configs", "get_config", "get_config_file"]

_PACKAGE_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _is_checkout(root: str) -> bool:
    return all(os.path.exists(os.path.join(root, p)) for p in ("setup.py", "configs", "projects"))


def _config_sources() -> dict[str, str]:
    """``{name: path}`` of every config: the checkout's files when d2ext runs from a source
    tree, else the installed package data."""
    if _is_checkout(_REPO):
        return config_sources(_REPO)
    if os.path.isdir(_PACKAGE_CONFIGS):
        return {
            rel: os.path.join(_PACKAGE_CONFIGS, *rel.split("/"))
            for rel in _python_files(_PACKAGE_CONFIGS)
        }
    return {}


def available_configs() -> list[str]:
    """Returns:
    the sorted names that :func:`get_config` accepts."""
    return sorted(_config_sources())


def get_config_file(name: str) -> str:
    """The file of a model-zoo config.

    Args:
        name: ``"<Paper>/<file>.py"`` or ``"<folder>/<file>.py"`` of ``configs/``, e.g.
            ``"SoCo/soco_R18_FPN_4conv1fc_demo.py"`` or ``"common/optim.py"``.

    Returns:
        the absolute path of the file.

    Raises:
        ValueError: for an unknown name; the message lists the closest names and every
            available one.
    """
    sources = _config_sources()
    key = name.replace("\\", "/").lstrip("/")
    if key in sources:
        return sources[key]
    if not sources:
        raise ValueError(
            f"No d2ext model-zoo configs found: neither a source checkout at {_REPO} nor "
            f"package data at {_PACKAGE_CONFIGS} (reinstall d2ext from a wheel or sdist)."
        )
    close = difflib.get_close_matches(key, list(sources), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = "\n  ".join(sorted(sources))
    raise ValueError(
        f"{name!r} is not a d2ext model-zoo config.{hint} Available configs:\n  {listing}"
    )


def get_config(name: str):
    """Loads a model-zoo config.

    Args:
        name: see :func:`get_config_file`.

    Returns:
        the ``omegaconf.DictConfig`` of ``detectron2.config.LazyConfig.load``: a fresh copy on
        every call, to modify freely and ``instantiate``.
    """
    from detectron2.config import LazyConfig

    return LazyConfig.load(get_config_file(name))
