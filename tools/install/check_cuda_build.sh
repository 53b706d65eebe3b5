#!/usr/bin/env bash
# Compiles and links d2ext._C with its CUDA kernels (FORCE_CUDA=1, sm_90) into a scratch
# folder, then loads that build and checks that every op has its kernels registered (CUDA
# for all but the CPU-only preprocessing ops). Proves
# the .cu files build on a machine without a GPU; the CUDA kernels themselves need a GPU to run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ -z "${CUDA_HOME:-}" ]; then
  for c in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"; do
    if [ -x "$c/bin/nvcc" ]; then CUDA_HOME=$c; break; fi
  done
fi
if [ -z "${CUDA_HOME:-}" ]; then
  echo "[cuda-build] no nvcc found: install the CUDA toolkit or set CUDA_HOME" >&2
  exit 1
fi
export CUDA_HOME FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-2}
echo "[cuda-build] CUDA_HOME=$CUDA_HOME arch=$TORCH_CUDA_ARCH_LIST"
cd "$ROOT"
"$PY" setup.py -q build_ext --build-temp "$OUT/tmp" --build-lib "$OUT/lib"
SO=$(find "$OUT/lib" -name '_C*.so')
"$PY" - "$SO" <<'PYEOF'
import sys

import torch

torch.ops.load_library(sys.argv[1])
ops = (
    "box_jitter",
    "assign_fpn_levels_threshold",
    "assign_fpn_levels_log",
    "ms_deform_attn",
    "ms_deform_attn_backward",
)
cpu_only = ("felzenszwalb", "selective_search")  # preprocessing ops, CPU by design
missing = [
    f"{op}/{key}"
    for op in ops + cpu_only
    for key in (("CPU",) if op in cpu_only else ("CPU", "CUDA"))
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"d2ext::{op}", key)
]
if missing:
    sys.exit(f"[cuda-build] kernels missing from the CUDA build: {missing}")
print(
    f"[cuda-build] OK: {sys.argv[1].split('/')[-1]} links and registers CPU+CUDA kernels of "
    f"{ops} and the CPU kernels of {cpu_only}"
)
PYEOF
