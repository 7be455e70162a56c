# The README's two commands: `make test` and `make demo`. Both work on a fresh,
# offline-except-for-PyPI machine: they create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The benchmarks' own venv: the test extra plus keras-cv, a benchmark peer only
# (never a dependency of the package). make test / make lint do not use it.
VENV_BENCH ?= .venv-bench
BENCH_STAMP := $(VENV_BENCH)/.installed-stamp
GPU_STAMP := $(VENV)/.gpu-installed-stamp

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: test lint demo install clean bench bench-gpu

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

# Every benchmark script, each in its own process (about 25 minutes on 2 cores),
# into BENCHMARKS.md (written atomically; a failed script is marked there and exits 1).
# timm's transforms are augment_pipeline.py's peer: TIMM_SITE=<site-packages with torch,
# torchvision and timm> (a venv of their own; never this project's) adds them.
TIMM_SITE ?=
bench: $(BENCH_STAMP)
	$(VENV_BENCH)/bin/python benchmarks/report.py --settings=report --output BENCHMARKS.md \
		$(if $(TIMM_SITE),--extra=augment_pipeline.py:--peer_path=$(TIMM_SITE))

$(VENV_BENCH)/bin/python:
	$(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/python -m pip install --quiet --upgrade pip

$(BENCH_STAMP): setup.py pyproject.toml | $(VENV_BENCH)/bin/python
	$(VENV_BENCH)/bin/python -m pip install --quiet -e ".[test]" "keras-cv==0.9.0"
	touch $(BENCH_STAMP)

# On a GPU machine: ResNet-50 v2 training (mixed precision, XLA, MirroredStrategy),
# synthetic batches vs the JPEG folder pipeline; prints its section. With
# BENCH_OUTPUT=BENCHMARKS.md it also replaces that section there (the others kept).
BENCH_OUTPUT ?=
bench-gpu: $(GPU_STAMP)
	$(BIN)/python benchmarks/report.py --settings=report --only=gpu_training.py \
		--output="$(BENCH_OUTPUT)"

$(GPU_STAMP): setup.py pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[gpu]"
	touch $(GPU_STAMP)

clean:
	rm -rf $(VENV) $(VENV_BENCH) *.egg-info .pytest_cache .ruff_cache demo_run
