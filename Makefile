# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both install the exact versions of requirements/lock.txt (a pip constraints file); pyproject.toml keeps the ranges.
PYTHON ?= python3
VENV := .venv
LOCK := requirements/lock.txt
ifeq ($(OS),Windows_NT)
BIN := $(VENV)/Scripts
JOBS ?= $(NUMBER_OF_PROCESSORS)
else
BIN := $(VENV)/bin
JOBS ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)
endif
PY := $(BIN)/python
PIP := $(PY) -m pip install -q -c $(LOCK)
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# torch's CPU build: the CPU index first (a CUDA torch from PyPI is ~3 GB more). `make run TORCH_INDEX=` skips it
# where pip already finds a CPU wheel (a local wheel folder), or names another index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_FROM := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX) --retries 1,)
# llama.cpp for the tests: the library only (no tests, examples, server, tools, multimodal), CPU, every core.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_APP=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF
# The panel's tests (Pilot and snapshots), which `make upgrade-check` runs against the newest versions.
PANEL_TESTS ?= tests/test_app.py tests/test_app_health.py tests/test_panel_keys.py tests/test_runs_screen.py \
	tests/test_screen_reads.py tests/test_training_view.py tests/test_training_judge_screen.py tests/test_inert.py \
	tests/test_first_run.py
UPGRADE_VENV := .venv-upgrade
UPY := $(UPGRADE_VENV)/$(if $(filter Windows_NT,$(OS)),Scripts,bin)/python
UPGRADE_TORCH ?= torch<2.15

.PHONY: run test setup setup-test bench demo lock upgrade-check clean

$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# What the panel and the demo need, nothing more: the core dependencies at their locked versions.
$(RUN_STAMP): pyproject.toml $(LOCK) | $(VENV)/pyvenv.cfg
	@# torch alone from the CPU index (its dependencies come from PyPI in the next step, at their locked versions).
	@# A CPU torch wheel pip already has at hand (a local wheel folder in its config) is taken without asking any index.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) --no-deps --no-index torch 2>/dev/null || $(PIP) --no-deps $(TORCH_FROM) torch
	$(PIP) -e .
	@# The demo's base model, built once here from its config and seed (weights are never committed).
	$(PY) data/demo/build_model.py
	@touch $(RUN_STAMP)

# The test extra on top: test tools, llama.cpp compiled with every core, Unsloth + bitsandbytes for their CPU paths.
# torchvision comes in with unsloth and is removed: PyPI's build does not load beside the CPU torch (its
# "torchvision::nms" operator is missing) and unsloth's import then refuses it; nothing here needs it.
$(TEST_STAMP): $(RUN_STAMP)
	$(PIP) -e ".[test]"
	-$(PY) -m pip uninstall -q -y torchvision
	@touch $(TEST_STAMP)

$(TEST_STAMP) upgrade-check: export CMAKE_BUILD_PARALLEL_LEVEL := $(JOBS)
$(TEST_STAMP) upgrade-check: export CMAKE_ARGS := $(LLAMA_CMAKE_ARGS)

setup: $(RUN_STAMP)
setup-test: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/aba-tui --config data/configs/demo.toml

test: $(TEST_STAMP)
	$(PY) -m pytest -q

bench: $(TEST_STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

demo: $(RUN_STAMP)
	$(BIN)/aba demo

# Re-pin requirements/lock.txt from .venv, after `make test` passed on the versions in it.
lock: $(TEST_STAMP)
	$(PY) requirements/make_lock.py

# The next library release, found by us first: the newest versions inside pyproject's ranges, in a venv of their
# own (made afresh each time, no lock), and the panel's tests against them.
upgrade-check:
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPY) -m pip install -q --upgrade pip
	$(UPY) -m pip install -q --no-deps $(TORCH_FROM) "$(UPGRADE_TORCH)"
	$(UPY) -m pip install -q -e ".[test]"
	-$(UPY) -m pip uninstall -q -y torchvision
	@echo "versions that differ from $(LOCK) (< locked, > newest):"
	$(UPY) requirements/make_lock.py --print | diff $(LOCK) - | grep '^[<>] [^#]' || true
	$(UPY) -m pytest -q -p no:cacheprovider $(PANEL_TESTS)

clean:
	rm -rf $(VENV) $(UPGRADE_VENV) build *.egg-info
