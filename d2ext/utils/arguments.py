"""detectron2's command line of a training script, built without importing torch.

:func:`default_argument_parser` gives the options of
``detectron2.engine.defaults.default_argument_parser`` (same names, types, defaults and
meaning), so ``tools/train_net.py --help`` and argument errors come before torch and
detectron2 load. ``tests/tools/test_help.py`` checks it against detectron2's.
"""

import argparse
import os
import sys

__all__ = ["argument_parser", "default_argument_parser"]


def default_argument_parser(
    epilog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser``, without importing torch or detectron2.

    Args:
        epilog: text after the options (default: detectron2's usage examples).
        description: text before the options (kept as written).

    Returns:
        argparse.ArgumentParser: ``--config-file``, ``--resume``, ``--eval-only``,
        ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url`` and the
        trailing ``opts`` (``path.key=value`` overrides).
    """
    prog = sys.argv[0]
    parser = argparse.ArgumentParser(
        description=description,
        epilog=epilog
        or f"""
Examples:

Run on single machine:
    $ {prog} --num-gpus 8 --config-file cfg.yaml

Change some config options:
    $ {prog} --config-file cfg.yaml MODEL.WEIGHTS /path/to/weight.pth SOLVER.BASE_LR 0.001

Run on multiple machines:
    (machine0)$ {prog} --machine-rank 0 --num-machines 2 --dist-url <URL> [--other-flags]
    (machine1)$ {prog} --machine-rank 1 --num-machines 2 --dist-url <URL> [--other-flags]
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Whether to attempt to resume from the checkpoint directory. "
        "See documentation of `DefaultTrainer.resume_or_load()` for what it means.",
    )
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of gpus *per machine*")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    # detectron2's deterministic port: an orphan process shows up as the port being occupied
    port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
    parser.add_argument(
        "--dist-url",
        default=f"tcp://127.0.0.1:{port}",
        help="initialization URL for pytorch distributed backend. See "
        "https://pytorch.org/docs/stable/distributed.html for details.",
    )
    parser.add_argument(
        "opts",
        help="""
Modify config options at the end of the command. For Yacs configs, use
space-separated "PATH.KEY VALUE" pairs.
For python-based LazyConfig, use "path.key=value".
        """.strip(),
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def argument_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The command line of ``tools/train_net.py`` (and of ``d2ext.engine.train_loop.main``):
    :func:`default_argument_parser` with d2ext's example.

    Args:
        description: text before the options (``tools/train_net.py`` gives its docstring).

    Returns:
        argparse.ArgumentParser
    """
    return default_argument_parser(
        epilog="Example: python tools/train_net.py --config-file "
        "configs/baselines/faster_rcnn_R18_FPN_demo.py train.max_iter=100",
        description=description,
    )
