#!/usr/bin/env bash
# ruff (lint + format check) over Python, clang-format over C++/CUDA. Run by CI.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${VENV_BIN:-$ROOT/.venv/bin}
cd "$ROOT"
"$BIN/ruff" check .
"$BIN/ruff" format --check .
"$BIN/clang-format" --dry-run --Werror $(find d2ext/layers/csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')
echo "lint: OK"
