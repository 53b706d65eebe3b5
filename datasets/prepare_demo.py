"""Generates the embedded demo data under $DETECTRON2_DATASETS/d2ext_demo (default
./datasets/d2ext_demo). Deterministic; splits already complete are kept (use --force), so a
run after new splits were added writes only the new ones and leaves the others' files alone.

    python datasets/prepare_demo.py [--root DIR] [--splits NAME ...] [--force]
"""

import argparse

from d2ext.data.datasets.demo import (
    DEMO_SPLITS,
    demo_root,
    generate_demo_data,
    get_split,
    split_is_complete,
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="default: $DETECTRON2_DATASETS/d2ext_demo")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"only these splits (default: all: {', '.join(s.name for s in DEMO_SPLITS)})",
    )
    parser.add_argument("--force", action="store_true", help="regenerate complete splits too")
    args = parser.parse_args()
    root = demo_root(args.root)
    splits = DEMO_SPLITS if args.splits is None else [get_split(n) for n in args.splits]
    todo = [s for s in splits if args.force or not split_is_complete(root, s)]
    for split in splits:
        print(f"{split.name}: {'generating' if split in todo else 'complete, kept'}")
    print(generate_demo_data(root, force=args.force, splits=todo))
