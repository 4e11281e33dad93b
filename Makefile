# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
ifeq ($(OS),Windows_NT)
BIN := $(VENV)/Scripts
else
BIN := $(VENV)/bin
endif
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: run test setup bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# CPU torch from the local wheel folder when no torch is present; an unpinned torch pulls GBs of CUDA.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	@# A real llama.cpp for the GGUF checks (compiled once, ~7 min on 2 cores, then pip's wheel cache); best effort.
	$(PY) -m pip install -q "llama-cpp-python>=0.3,<0.4" || echo "llama-cpp-python did not install: the llama.cpp GGUF checks will skip"
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/aba-tui --config data/configs/demo.toml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

demo: $(STAMP)
	$(BIN)/aba demo

clean:
	rm -rf $(VENV) build *.egg-info
