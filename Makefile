# The README's two commands: `make test` and `make demo`. Both work on a fresh,
# offline-except-for-PyPI machine: they create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: test lint demo install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

SOURCES := $(wildcard keras_preact recipes export tests benchmarks)

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

test: lint
	$(BIN)/python -m pytest -q

# A fresh run each time (a kept demo_run would be resumed, not retrained).
demo: $(STAMP)
	rm -rf demo_run
	$(BIN)/python recipes/cifar.py --dataset=digits --model_dir=demo_run --depth=20 --epochs=15 \
		--seed=0 --export_dir=demo_run/exported

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache demo_run
