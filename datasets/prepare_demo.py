"""Generates the embedded demo data under $DETECTRON2_DATASETS/d2ext_demo (default
./datasets/d2ext_demo). Deterministic; splits already complete are kept (use --force).

    python datasets/prepare_demo.py [--root DIR] [--force]
"""

import argparse

from d2ext.data.datasets.demo import generate_demo_data

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="default: $DETECTRON2_DATASETS/d2ext_demo")
    parser.add_argument("--force", action="store_true", help="regenerate complete splits too")
    args = parser.parse_args()
    print(generate_demo_data(args.root, force=args.force))
