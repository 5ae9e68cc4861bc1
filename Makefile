# tdmbench developer entry points. `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-slow lint format test-mmdet

# torch first, from the local wheel cache: a plain `torch` requirement would pull a multi-GB
# CUDA build. torch 2.14.1 + torchvision 0.29.1 is the pair that imports together here
# (open_clip, used by HPS v2.1, needs torchvision).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[ocr,clip,tensorboard,label,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/tdmbench demo

test: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# The `slow` tests (deselected by `make test`), e.g. the full SD3.5-Medium / Z-Image transformers with
# random bf16 weights on the CPU (tests/models/test_real_arch_cpu.py alone: ~7 min on 2 shared cores, peak
# 13.4 GiB). TDMBENCH_PERF_OUT=results/perf/real_arch_cpu.md records their time and peak memory there.
test-slow: setup
	$(PY) -m pytest -m slow

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The official GenEval detector (mmdet) end to end, in its own venv: mmcv 2.1.0 compiles from source
# (~10 min on 2 free cores; docs/geneval-mmdet.md). Not part of `make test` / CI. MAX_JOBS=1 and
# `nice` keep it from starving other work on a shared machine; raise MAX_JOBS on a free one.
# torch 2.13.0 (CPU), not the main venv's 2.14.1: mmcv 2.1.0 compiles as C++17 and torch 2.14's
# headers need C++20 ("C++20 or later compatible compiler is required to use ATen"). No `clip`
# extra: it pulls torchvision, which needs torch 2.14.1 here; the colour classifier uses transformers.
MMDET_VENV ?= .venv-mmdet
MAX_JOBS ?= 1
$(MMDET_VENV)/.installed: pyproject.toml
	python3 -m venv $(MMDET_VENV)
	$(MMDET_VENV)/bin/python -m pip install -q -U pip
	$(MMDET_VENV)/bin/python -m pip install -q torch==2.13.0
	$(MMDET_VENV)/bin/python -m pip install -q 'setuptools<70' wheel
	MAX_JOBS=$(MAX_JOBS) nice -n 19 $(MMDET_VENV)/bin/python -m pip install --no-build-isolation mmcv==2.1.0
	$(MMDET_VENV)/bin/python -m pip install -q -e '.[mmdet,dev]'
	touch $@

test-mmdet: $(MMDET_VENV)/.installed
	nice -n 10 $(MMDET_VENV)/bin/python -m pytest -m mmdet tests/rewards/test_geneval_mmdet.py
