"""Prints what d2ext runs on: ``python -m d2ext.utils.collect_env``.

Says whether detectron2 and its ``_C`` are present, whether ``d2ext._C`` is built and which
kernels (CPU / CUDA) each of its operators has, so a missing extension shows up before hours
of training rather than after.
"""

import importlib
import os
import platform
import sys

import torch

from d2ext.layers._ops import C_IMPORT_ERROR, CPU_ONLY_OPS, OP_NAMES, has_kernel


def collect_env_info() -> list[tuple[str, str]]:
    """
    Returns:
        list[tuple[str, str]]: (name, value) rows: platform, Python, torch and CUDA, detectron2
        and its ``_C``, ``d2ext._C`` and the kernels of each of its operators, and the versions
        of optional packages.
    """
    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("machine", platform.machine()),
        ("torch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
        ("torch CUDA build", str(torch.version.cuda)),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    try:
        import detectron2

        rows.append(
            ("detectron2", f"{detectron2.__version__} @ {os.path.dirname(detectron2.__file__)}")
        )
        try:
            importlib.import_module("detectron2._C")
            rows.append(("detectron2._C", "present"))
        except ImportError as e:
            rows.append(
                (
                    "detectron2._C",
                    f"missing ({e}); rotated boxes and deformable conv "
                    "unavailable, everything d2ext uses works",
                )
            )
    except ImportError as e:
        rows.append(("detectron2", f"not importable: {e}"))

    import d2ext

    rows.append(("d2ext", os.path.dirname(d2ext.__file__)))
    if C_IMPORT_ERROR is None:
        from d2ext import _C

        rows.append(("d2ext._C", f"built @ {_C.__file__}"))
        for op in OP_NAMES:
            kernels = [dev for dev in ("CPU", "CUDA") if has_kernel(op, dev)]
            note = " (CPU-only by design)" if op in CPU_ONLY_OPS else ""
            rows.append((f"  d2ext::{op}", (", ".join(kernels) or "no kernels") + note))
    else:
        rows.append(("d2ext._C", f"NOT BUILT ({C_IMPORT_ERROR}); pure-torch references will run"))
    for name in ("fvcore", "pycocotools", "cv2", "open_clip", "selectivesearch", "numpy"):
        try:
            mod = importlib.import_module(name)
            rows.append((name, getattr(mod, "__version__", "present")))
        except ImportError:
            rows.append((name, "not installed"))
    return rows


def main() -> None:
    """Prints :func:`collect_env_info`'s rows as an aligned table."""
    rows = collect_env_info()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
