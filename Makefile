# d2ext: `make demo` runs the main job, `make test` the test suite. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
export D2EXT_VENV := $(abspath $(VENV))
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS ?= ignore::DeprecationWarning,ignore::FutureWarning

.PHONY: setup demo test lint cuda-build-check wheel-check bench data clean

setup:
	@bash tools/install/setup_env.sh

data: setup
	$(PY) datasets/prepare_demo.py

# make demo: the baseline detector. make demo MODE=soco: SoCo pretraining -> fine-tuning vs the
# same fine-tuning from random initialisation (projects/SoCo/run_demo.py). make demo
# MODE=aligndet [DETECTOR=faster_rcnn|retinanet|fcos]: AlignDet box-domain pretraining ->
# fine-tuning vs the same backbone with random neck and heads (projects/AlignDet/run_demo.py).
# make demo MODE=scaledet: ScaleDet joint training on shapes + signs vs each single-dataset
# model, per-dataset and zero-shot evaluation (projects/ScaleDet/run_demo.py). make demo
# MODE=imted: MAE pretraining -> imTED vs encoder-only fine-tuning (projects/imTED/run_demo.py).
# make demo MODE=codetr: Co-Deformable-DETR vs its base Deformable DETR (projects/CoDETR/run_demo.py).
# make demo MODE=codino: Co-DINO vs its base DINO, and DINO vs Deformable DETR
# (projects/CoDETR/run_demo.py --pair codino).
MODE ?= baseline
DETECTOR ?= faster_rcnn
demo: data
ifeq ($(MODE),soco)
	$(PY) projects/SoCo/run_demo.py
else ifeq ($(MODE),aligndet)
	$(PY) projects/AlignDet/run_demo.py --detector $(DETECTOR)
else ifeq ($(MODE),scaledet)
	$(PY) projects/ScaleDet/run_demo.py
else ifeq ($(MODE),imted)
	$(PY) projects/imTED/run_demo.py
else ifeq ($(MODE),codetr)
	$(PY) projects/CoDETR/run_demo.py
else ifeq ($(MODE),codino)
	$(PY) projects/CoDETR/run_demo.py --pair codino
else ifeq ($(MODE),baseline)
	$(PY) tools/train_net.py --resume --config-file configs/baselines/faster_rcnn_R18_FPN_demo.py
else
	@echo "unknown MODE=$(MODE); use MODE=baseline, soco, aligndet, scaledet, imted, codetr or codino" >&2; exit 2
endif

test: setup
	$(PY) -m pytest -q tests

lint: setup
	VENV_BIN=$(VENV)/bin bash tools/lint.sh

cuda-build-check: setup
	PY=$(PY) bash tools/install/check_cuda_build.sh

# sdist + wheel (python -m build --no-isolation) from a scratch copy; the wheel installed into
# a fresh venv and used from outside the checkout (tools/install/check_wheel.sh)
wheel-check: setup
	PY=$(PY) bash tools/install/check_wheel.sh

bench: setup
	$(PY) benchmarks/ops.py

clean:
	rm -rf build dist output *.egg-info d2ext/_C*.so
