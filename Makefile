# Two commands for a fresh machine with Python >= 3.11 and pip:
#   make demo   - create .venv and run the default study end to end (offline, CPU, a few minutes)
#   make test   - create .venv, run ruff and the test suite (what CI runs, via .ci/run)
#   make lint   - ruff (pinned in requirements.lock; settings in pyproject.toml)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK ?= requirements.lock
CORES ?= 2
NODEPS ?= requirements-nodeps.txt
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) $(NODEPS) pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint report bench clean

$(STAMP): $(LOCK) $(NODEPS) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The regular PyPI torch build (CUDA); it runs on CPU too. Pinned: see requirements.txt.
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -r $(NODEPS)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	@echo "Figures: results/figures/  Tables: results/metrics/  Report: results/report.html"

test: lint
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .

report: setup
	$(BIN)/snakemake --report results/report.html

bench: setup
	$(BIN)/python benchmarks/extraction.py --device cpu

clean:
	rm -rf results .snakemake
