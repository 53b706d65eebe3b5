#!/usr/bin/env bash
# Creates or updates the project's Python environment, then builds d2ext._C.
#
#   bash tools/install/setup_env.sh        (what `make setup`, `make demo` and `make test` run)
#
# Steps: venv -> torch 2.14.1 / torchvision 0.29.1 -> requirements.txt -> detectron2 -> d2ext.
# Each step checks first and does nothing when already done, so a second run takes seconds.
# Environment:
#   D2EXT_VENV   the virtual environment to create or reuse (default: .venv in the repo);
#                point it at an existing venv to reuse its torch and detectron2.
#   D2EXT_CACHE  where downloaded wheels are kept (default: .cache in the repo).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${D2EXT_VENV:-$ROOT/.venv}
CACHE=${D2EXT_CACHE:-$ROOT/.cache}
PY="$VENV/bin/python"
STAMPS="$VENV/.d2ext-stamps"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
D2_WHEEL=sal_detectron2-0.7.2-cp310-none-any.whl
D2_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561

STEP=start
say() { echo "[setup] $*"; }
on_error() {
  echo "[setup] FAILED in step '$STEP'." >&2
  case "$STEP" in
    venv) echo "[setup] Need python3 (3.10+) with venv: apt-get install python3-venv." >&2 ;;
    torch) echo "[setup] pip could not install torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION; check the package index (pip config list) or install them into $VENV yourself and rerun." >&2 ;;
    requirements) echo "[setup] pip could not install requirements.txt; read pip's error above (network to PyPI? a pinned version missing?) and rerun." >&2 ;;
    detectron2) echo "[setup] Could not get detectron2. Either install it into $VENV yourself (e.g. build it from source: pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git') and rerun — an importable detectron2 is kept — or check that PyPI serves $D2_WHEEL." >&2 ;;
    d2ext) echo "[setup] Building d2ext._C failed; the compiler error is above. Needs g++ and the Python headers (apt-get install build-essential python3-dev)." >&2 ;;
  esac
  exit 1
}
trap on_error ERR

hash_of() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS" && echo "$2" >"$STAMPS/$1"; }
pip_() { "$PY" -m pip --disable-pip-version-check --no-cache-dir -q "$@"; }

STEP=venv
if [ ! -x "$PY" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
  pip_ install --upgrade pip "setuptools<82" wheel
fi

STEP=torch
if "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.split('+')[0] == '$TORCH_VERSION' and torchvision.__version__.split('+')[0] == '$TORCHVISION_VERSION'))" 2>/dev/null; then
  say "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION: present"
else
  say "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  # the CUDA build of torch with its nvidia libraries fills about 6 GB of the venv
  FREE_KB=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print $4}')
  if [ "${FREE_KB:-0}" -lt 7000000 ]; then
    echo "[setup] only $((FREE_KB / 1024)) MB free where $VENV lives; torch needs about 7 GB." >&2
    echo "[setup] Free some space (old venvs, output/ checkpoints, /tmp) or set D2EXT_VENV elsewhere." >&2
    false
  fi
  pip_ install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

STEP=requirements
REQ_HASH=$(hash_of "$ROOT/requirements.txt")
if stamp_ok requirements "$REQ_HASH"; then
  say "requirements.txt: present"
else
  say "installing requirements.txt"
  pip_ install -r "$ROOT/requirements.txt"
  stamp_set requirements "$REQ_HASH"
fi

STEP=detectron2
if "$PY" -c "import detectron2.config, detectron2.modeling, detectron2.model_zoo" 2>/dev/null; then
  say "detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)'): present, kept"
else
  say "detectron2 not importable: repacking $D2_WHEEL from PyPI (see tools/install/repack_detectron2.py)"
  mkdir -p "$CACHE"
  if [ ! -f "$CACHE/$D2_WHEEL" ] || ! echo "$D2_SHA256  $CACHE/$D2_WHEEL" | sha256sum -c --quiet; then
    rm -f "$CACHE/$D2_WHEEL"
    pip_ download --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
      --abi none --platform any "sal-detectron2==0.7.2" -d "$CACHE"
  fi
  WHEEL=$("$PY" "$ROOT/tools/install/repack_detectron2.py" "$CACHE/$D2_WHEEL" "$CACHE")
  pip_ install "$WHEEL"
  "$PY" -c "import detectron2.config, detectron2.modeling"
fi

STEP=d2ext
SRC_HASH=$(cd "$ROOT" && hash_of setup.py $(find d2ext/layers/csrc -type f | sort) <("$PY" -c "import torch; print(torch.__version__)"))
if stamp_ok d2ext "$SRC_HASH" && (cd "$ROOT" && "$PY" -c "import torch, d2ext._C") 2>/dev/null; then
  say "d2ext._C: built and up to date"
else
  say "building d2ext (pip install --no-build-isolation -e .)"
  (cd "$ROOT" && MAX_JOBS=${MAX_JOBS:-2} pip_ install --no-build-isolation --no-deps -e .)
  (cd "$ROOT" && "$PY" -c "import torch, d2ext._C")
  stamp_set d2ext "$SRC_HASH"
fi
say "ready: $PY"
