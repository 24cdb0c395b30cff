# Two commands set up a fresh machine (Python 3.10+ is all it needs):
#   make report   create .venv if missing, install, run the main job
#   make test     create .venv if missing, install, lint (ruff), run the whole test suite
# The install step runs again only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lab2-installed

.PHONY: report notebooks test test-fast install clean-venv

# The main job: audit + the four-model experiment (profile auto: full with a GPU, quick without;
# LAB2_PROFILE overrides), then every notebook re-run in place so all figures regenerate.
# Without make: python -m lab2 report (after the install step below).
report: $(STAMP)
	$(PY) -m lab2 report

notebooks: $(STAMP)
	$(PY) -m lab2 notebooks

# Two pytest workers (pytest-xdist), a test file each at a time, so that a notebook's cells and a
# file's fixtures stay in one process: 735 s against 873 s in one process on 2 cores
# (benchmarks/RESULTS.md, "The test suite in one process and in two").
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadfile

# The core's tier (a minute on 2 cores, for every few minutes while editing): data, preprocessing,
# models, metrics, statistics, the training loop and the rule that the core imports no machinery.
test-fast: $(STAMP)
	$(PY) -m pytest -m core tests

install: $(STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "lab2 needs Python 3.10 or newer; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

# requirements-lock.txt holds the versions that produced the committed results; they are used
# where they were made (Python 3.11 on Linux x86-64), pyproject.toml's lower bounds elsewhere.
LOCK := requirements-lock.txt
LOCKED := import sys, platform; print("-c $(LOCK)" if sys.version_info[:2] == (3, 11) \
	and sys.platform == "linux" and platform.machine() == "x86_64" else "")

$(STAMP): pyproject.toml $(wildcard $(LOCK)) | $(PY)
	$(PY) -m pip install -e '.[dev]' $(if $(wildcard $(LOCK)),$$($(PY) -c '$(LOCKED)'))
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
