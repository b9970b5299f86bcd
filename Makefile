# Two commands on a fresh clone: `make demo` (the main job) and `make test` (the suite).
# Both create .venv and install the pinned dependency set into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/advisor demo

bench: $(STAMP)
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/bench_quantizer.py --write bench/RESULTS.md
	$(BIN)/python bench/bench_nll.py --write bench/RESULTS.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
