# neuface — two commands on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) a local virtualenv and install everything they need.
# torch is pinned and installed first: an unpinned torch pulls multi-GB CUDA builds.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.neuface-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
CORES ?= 2
# pip prints a warning per package for the machine's extra index folders; hide those lines, keep pip's status.
QUIET_PIP := { grep -v "is ignored: it is neither" || true; }
PYTEST_ARGS ?=
# Workflow rules call the `neuface` CLI: put the virtualenv first on PATH for everything make runs.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install test lint demo benchmark benchmark-train bench bench-dag gpu-check clean help

help:
	@echo "make demo   - run the workflow on the built-in demo data (results/ )"
	@echo "make test   - lint + test suite (CPU, offline)"
	@echo "make benchmark-train - Table 4/5 analogues: regressor fine-tuning and motion prior on a synthetic train split"
	@echo "make bench  - benchmarks (figures printed next to a same-run reference)"
	@echo "make benchmark - synthetic ground-truth benchmark through the whole DAG (tables with MPVE)"
	@echo "make gpu-check - on a CUDA machine: cuda tests + GPU benchmark (< 8 min) -> benchmarks/results/"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel 2>&1 | $(QUIET_PIP)
	$(PIP) install "$(TORCH_PIN)" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" \
		|| (echo "torch 2.13.0 did not install" >&2; exit 1)
	$(PIP) install -e ".[workflow,demo,landmarks,dev]" 2>&1 | $(QUIET_PIP)
	$(PIP) install --no-deps face-alignment==1.5.0 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import neuface, snakemake, roma, av, dlib, face_alignment, skvideo" \
		|| (echo "install incomplete" >&2; exit 1)
	@touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakemake --lint --cores 1 >/dev/null

# One thread per test worker: $(CORES) workers already fill the cores; oversubscribed torch threads spin.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
		$(BIN)/python -m pytest -n $(CORES) -m "not cuda" $(PYTEST_ARGS)

# The summary runs whatever snakemake's outcome and ends with its verdict (complete / failed sequences /
# incomplete); make's exit status stays snakemake's.
demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES); rc=$$?; \
		$(BIN)/neuface summary results --snakemake-exit $$rc; exit $$rc

benchmark: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) \
		--configfile config/config.yaml config/benchmark/config.yaml; rc=$$?; \
		$(BIN)/neuface summary results/benchmark --snakemake-exit $$rc; exit $$rc

# The synthetic benchmark with a train split: fine-tuned regressors (Table 5) and motion priors (Table 4).
benchmark-train: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) \
		--configfile config/config.yaml config/benchmark/config.yaml config/benchmark/train.yaml; rc=$$?; \
		$(BIN)/neuface summary results/benchmark-train --snakemake-exit $$rc; exit $$rc

# bench_dag (dry-run DAG construction at 1k/10k/100k sequences) takes ~30 min: `make bench-dag`.
bench: $(STAMP)
	$(BIN)/python -m benchmarks --skip bench_dag

# On a CUDA machine (no install step: it uses the virtualenv if there is one, else $(PYTHON), which must have a
# CUDA build of torch and the project's dependencies). Exits 2 without a CUDA device. Figures:
# benchmarks/results/gpu-check.json.
gpu-check:
	@py=$(BIN)/python; test -x $$py || py=$(PYTHON); \
		PYTHONPATH=src $$py -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

bench-dag: $(STAMP)
	$(BIN)/python -m benchmarks --only bench_dag

clean:
	rm -rf results logs .snakemake
