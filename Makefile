# tdmbench developer entry points. `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test lint format

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

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
