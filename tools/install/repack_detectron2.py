"""Repack the PyPI wheel ``sal-detectron2==0.7.2`` as a pure-Python ``detectron2`` wheel.

Why: ``detectron2`` is not on PyPI and GitHub may be unreachable. ``sal-detectron2`` 0.7.2
carries upstream detectron2's Python files (commit a59f0563) under another distribution
name, with a prebuilt ``_C`` for CPython 3.10 + CUDA 12 that cannot load elsewhere and two
numpy-2 incompatibilities that upstream fixed later (commit 70f45430). This script:

1. verifies the downloaded wheel against a pinned sha256;
2. drops ``detectron2/_C*.so`` and the top-level ``tools`` package (it would shadow ours);
3. applies upstream's numpy-2 fix: ``np.array(x, copy=False)`` -> ``np.asarray(x)``;
4. writes metadata named ``detectron2`` with upstream's requirements and a fresh RECORD.

Usage:
    python tools/install/repack_detectron2.py SRC_WHEEL OUT_DIR
"""

import argparse
import base64
import csv
import hashlib
import io
import re
import sys
import zipfile

SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
VERSION = "0.7.2"
DIST_INFO = f"detectron2-{VERSION}.dist-info"
# Upstream detectron2's setup.py install_requires at the packed commit.
REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "black",
    "packaging",
]
# Upstream's numpy-2 fix (commit 70f45430): exact (old, new) replacements per file.
NUMPY2_FIXES = {
    "detectron2/layers/mask_ops.py": [
        ("np.array(mask, copy=False)", "np.asarray(mask)"),
    ],
    "detectron2/evaluation/sem_seg_evaluation.py": [
        (
            "np.array(Image.open(f), copy=copy, dtype=dtype)",
            "np.asarray(Image.open(f), dtype=dtype)",
        ),
    ],
}


def _fix_numpy2(name: str, text: str) -> str:
    for old, new in NUMPY2_FIXES[name]:
        if text.count(old) != 1:
            raise RuntimeError(f"{name}: expected exactly one {old!r} to fix")
        text = text.replace(old, new)
    return text


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def repack(src: str, out_dir: str) -> str:
    with open(src, "rb") as f:
        blob = f.read()
    got = hashlib.sha256(blob).hexdigest()
    if got != SHA256:
        raise SystemExit(f"sha256 mismatch for {src}: got {got}, expected {SHA256}")

    files = {}
    with zipfile.ZipFile(io.BytesIO(blob)) as zin:
        for name in zin.namelist():
            if name.endswith("/"):
                continue
            top = name.split("/", 1)[0]
            if top != "detectron2":  # tools/ and the old dist-info
                continue
            if re.match(r"detectron2/_C.*\.so$", name):
                continue
            data = zin.read(name)
            if name in NUMPY2_FIXES:
                data = _fix_numpy2(name, data.decode()).encode()
            files[name] = data

    metadata = [
        "Metadata-Version: 2.1",
        "Name: detectron2",
        f"Version: {VERSION}",
        "Summary: Detectron2 (upstream commit a59f0563, pure Python, repacked from "
        "sal-detectron2 0.7.2 by d2ext)",
        "Home-page: https://github.com/facebookresearch/detectron2",
        "License: Apache-2.0",
        "Requires-Python: >=3.8",
    ] + [f"Requires-Dist: {r}" for r in REQUIRES]
    files[f"{DIST_INFO}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{DIST_INFO}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: d2ext-repack\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{DIST_INFO}/top_level.txt"] = b"detectron2\n"

    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        writer.writerow([name, _record_hash(data), len(data)])
    writer.writerow([f"{DIST_INFO}/RECORD", "", ""])
    files[f"{DIST_INFO}/RECORD"] = record.getvalue().encode()

    out = f"{out_dir.rstrip('/')}/detectron2-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in files.items():
            zout.writestr(name, data)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    print(repack(args.src, args.out_dir))


if __name__ == "__main__":
    sys.exit(main())
