#!/usr/bin/env bash
# Builds d2ext's sdist and wheel from a scratch copy of the working tree (python -m build
# --no-isolation), checks what they carry, installs the wheel into a fresh venv and uses it
# from outside the checkout: import d2ext and d2ext._C, collect_env, every packaged config
# through d2ext.model_zoo.get_config, one demo training step.
#
#   bash tools/install/check_wheel.sh     (`make wheel-check`; .ci/run runs it after `make test`)
#
# The fresh venv has no torch of its own (that is 5.5 GB and minutes): a .pth file gives it a
# folder of symlinks to the project venv's site-packages minus d2ext (no editable d2ext, no
# d2ext dist-info, no .pth files), so the heavy dependencies come from there while d2ext must come from the wheel,
# installed with --no-deps after `pip install --dry-run --no-index` proved its requirements
# are all met by what is installed. Environment: PY (the project venv's python), MAX_JOBS
# (compile jobs, default 2), KEEP=1 keeps the scratch folder.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
case "$PY" in /*) ;; *) PY="$PWD/$PY" ;; esac # the script cds: a relative PY (make passes one) must not break
TMP=$(mktemp -d -t d2ext-wheel.XXXXXX)
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "[wheel] kept $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT
say() { echo "[wheel] $*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# 1. a scratch copy of what git tracks or would track (no .venv, build/, *.so, output/)
mkdir -p "$TMP/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
  (cd "$ROOT" && while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
  done) | (cd "$ROOT" && xargs -0 cp --parents -t "$TMP/src")

# 2. sdist, then a wheel built from that sdist, against the project venv's torch
T0=$(now)
(cd "$TMP/src" && MAX_JOBS=${MAX_JOBS:-2} "$PY" -m build --no-isolation --outdir "$TMP/dist" \
  >"$TMP/build.log" 2>&1) || { tail -n 40 "$TMP/build.log" >&2; say "build FAILED" >&2; exit 1; }
T1=$(now)
SDIST=$(ls "$TMP"/dist/d2ext-*.tar.gz)
WHEEL=$(ls "$TMP"/dist/d2ext-*.whl)
say "built in $(secs "$T0" "$T1") s: $(basename "$SDIST") ($(du -k "$SDIST" | cut -f1) KiB), $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"

# 3. what the archives carry: every source the build needs in the sdist; the extension, every
#    config (under d2ext/model_zoo/configs) and the pinned metadata in the wheel
"$PY" - "$TMP/src" "$SDIST" "$WHEEL" <<'PYEOF'
import glob
import os
import sys
import tarfile
import zipfile

import torch

src, sdist, wheel = sys.argv[1:]
with tarfile.open(sdist) as t:
    top = t.getnames()[0].split("/")[0]
    in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
with zipfile.ZipFile(wheel) as z:
    in_wheel = set(z.namelist())
    meta_name = next(n for n in in_wheel if n.endswith(".dist-info/METADATA"))
    meta = z.read(meta_name).decode()


def rel(pattern):
    return {os.path.relpath(p, src) for p in glob.glob(os.path.join(src, pattern), recursive=True)}


need = {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "requirements.txt"}
need |= rel("d2ext/**/*.py") | rel("d2ext/layers/csrc/**/*.*")
configs = {p: os.path.join("d2ext/model_zoo/configs", os.path.relpath(p, "configs"))
           for p in rel("configs/**/*.py")}
for p in rel("projects/*/configs/**/*.py"):
    paper, tail = p.split("/")[1], p.split("/", 3)[3]
    configs[p] = os.path.join("d2ext/model_zoo/configs", paper, tail)
need |= set(configs)
missing = sorted(need - in_sdist)
if missing:
    sys.exit(f"[wheel] the sdist {top} lacks {len(missing)} files: {missing[:20]}")
missing = sorted(set(configs.values()) - in_wheel)
if missing:
    sys.exit(f"[wheel] the wheel lacks {len(missing)} configs: {missing[:20]}")
if not any(n.startswith("d2ext/_C") and n.endswith(".so") for n in in_wheel):
    sys.exit("[wheel] the wheel has no compiled d2ext/_C*.so")
torch_pin = f"Requires-Dist: torch=={torch.__version__.split('+')[0]}"
for line in (torch_pin, "License-Expression: Apache-2.0", "Requires-Dist: scikit-image"):
    if not any(m.startswith(line) for m in meta.splitlines()):
        sys.exit(f"[wheel] METADATA lacks {line!r}")
if "License-File: LICENSE" not in meta or "# d2ext" not in meta:
    sys.exit("[wheel] METADATA lacks the licence file or the README as long description")
print(f"[wheel] sdist carries all {len(need)} build inputs; wheel carries d2ext._C, "
      f"{len(configs)} configs, {torch_pin.split(': ')[1]}, Apache-2.0, README")
PYEOF

# 4. a fresh venv that sees the project venv's packages, minus d2ext, through a .pth file
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
BASE_PY=$("$PY" -c "import sys; print(sys._base_executable)")
mkdir -p "$TMP/deps"
for entry in "$SITE"/*; do
  case "$(basename "$entry")" in
    d2ext | d2ext-*.dist-info | d2ext.egg-link | __editable__*d2ext* | *.pth | __pycache__) ;;
    *) ln -s "$entry" "$TMP/deps/" ;;
  esac
done
T2=$(now)
"$BASE_PY" -m venv --without-pip "$TMP/venv"
VPY="$TMP/venv/bin/python"
VSITE=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$TMP/deps" >"$VSITE/d2ext_check_deps.pth"
T3=$(now)
mkdir -p "$TMP/run"
cd "$TMP/run"
unset PYTHONPATH
export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

# 5. install_requires satisfiable from what is installed: pip would install d2ext only
"$VPY" -m pip install -q --dry-run --no-index --report "$TMP/report.json" "$WHEEL"
"$VPY" - "$TMP/report.json" <<'PYEOF'
import json
import sys

names = [i["metadata"]["name"] for i in json.load(open(sys.argv[1]))["install"]]
if names != ["d2ext"]:
    sys.exit(f"[wheel] pip --dry-run would install {names}, expected d2ext alone")
PYEOF
T4=$(now)
"$VPY" -m pip install -q --no-index --no-deps "$WHEEL"
T5=$(now)
"$VPY" -m pip check
say "fresh venv: created in $(secs "$T2" "$T3") s, wheel installed in $(secs "$T4" "$T5") s" \
  "(pip --no-deps; dependency dry run $(secs "$T3" "$T4") s)"

# 6. the installed package, from outside the checkout
"$VPY" - "$ROOT" "$VSITE" <<'PYEOF'
import importlib.metadata as md
import os
import sys

from packaging.requirements import Requirement

root, vsite = (os.path.realpath(p) for p in sys.argv[1:])
import torch  # noqa: E402,F401  (loads the libraries d2ext._C links against)

import d2ext  # noqa: E402
import d2ext._C  # noqa: E402,F401

where = os.path.realpath(d2ext.__file__)
if where.startswith(root + os.sep) or not where.startswith(vsite + os.sep):
    sys.exit(f"[wheel] d2ext imported from {where}, not from the fresh venv {vsite}")
unmet = []
for text in md.requires("d2ext") or []:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an extra
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        unmet.append(f"{req} (not installed)")
        continue
    if not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{req} (installed {version})")
if unmet:
    sys.exit(f"[wheel] requirements not met: {unmet}")
print(f"[wheel] d2ext {md.version('d2ext')} imported from {os.path.dirname(where)}; "
      f"all {len(md.requires('d2ext'))} requirements met (extras included where installed)")
PYEOF
"$VPY" -m d2ext.utils.collect_env >"$TMP/collect_env.txt"
grep -q "d2ext" "$TMP/collect_env.txt"
say "collect_env: OK ($(wc -l <"$TMP/collect_env.txt") lines)"

# 7. every packaged config through get_config; one training step of the demo detector
DETECTRON2_DATASETS="$TMP/datasets" HF_HUB_OFFLINE=1 "$VPY" - "$TMP/out" <<'PYEOF'
import math
import sys

from d2ext import model_zoo
from d2ext.data import register_all_datasets
from d2ext.data.datasets.demo import generate_demo_data
from d2ext.engine.train_loop import do_train

names = model_zoo.available_configs()
failed = {}
for name in names:
    try:
        model_zoo.get_config(name)
    except Exception as e:  # report every config that does not load, not only the first
        failed[name] = f"{type(e).__name__}: {e}"
if failed:
    sys.exit("[wheel] get_config failed for:\n" + "\n".join(f"  {k}: {v}" for k, v in failed.items()))
papers = sorted({n.split("/")[0] for n in names} - {"common", "baselines"})
if papers != ["AlignDet", "CoDETR", "ScaleDet", "SoCo", "imTED"]:
    sys.exit(f"[wheel] get_config lacks paper configs: it has {papers}")
print(f"[wheel] get_config loaded all {len(names)} packaged configs:")
for name in names:
    print(f"  {name}")

generate_demo_data()
register_all_datasets()
cfg = model_zoo.get_config("baselines/faster_rcnn_R18_FPN_demo.py")
cfg.train.update(max_iter=1, output_dir=sys.argv[1], device="cpu", log_period=1)
cfg.dataloader.evaluator = None  # the step only: no evaluation pass
cfg.dataloader.train.num_workers = 0
trainer = do_train(cfg)
loss = trainer.storage.history("total_loss").latest()
if trainer.iter != 1 or not math.isfinite(loss):
    sys.exit(f"[wheel] the demo step did not run (iter {trainer.iter}, loss {loss})")
print(f"[wheel] one demo training step: total_loss {loss:.3f}")
PYEOF
say "OK"
