# The two set-up commands of the README, and a few helpers.
#   make train   set up .venv, make Fashion-MNIST available, train LeNet-5 (the book's recipe)
#   make test    the same set-up, then the whole test suite
#   make test-fast   the suite without the tests marked slow: the inner loop, under a minute
#   make lint     ruff, then mypy (strict on the public API; settings in pyproject.toml)
#   make test-native   the fused kernel forced at each x86-64 level, and cross-built for aarch64
#   make faults   the crash campaign: runs and sweeps killed with SIGKILL, resumed, compared
#   make fuzz     the deeper fuzzing run of every parser (hypothesis, 120 s per target)
#   make docs     the documentation site in build/site (mkdocs build --strict: a broken link fails)
#   make notebook   run the chapter's notebook with the book's budget, keeping its outputs (~3 min)
# Pass options to `lenet train` with ARGS, e.g. make train ARGS="--epochs 2".

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: train test test-fast test-native setup data lint docs notebook bench faults fuzz clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,docs,onnx,photos,tensorboard,serve,ray,search,jax,tensorflow]'
	touch $@

setup: $(VENV)/.installed

data: setup
	scripts/get-data.sh $(BIN)/lenet

train: data
	$(BIN)/lenet train $(ARGS)

test: data
	$(BIN)/python -m pytest $(ARGS)

test-fast: data
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-native: setup
	scripts/test-native.sh $(BIN)/python

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The notebook is stored with its outputs (the site shows them): refresh them after a change.
notebook: data
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1200 \
		docs/tutorials/lenet-chapter.ipynb

faults: data
	$(BIN)/python benchmarks/faults.py $(ARGS)

fuzz: setup
	$(BIN)/python benchmarks/fuzz.py --seconds 120 $(ARGS)

bench: data
	$(BIN)/lenet bench $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
