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

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

# The default suite minus tests marked slow (for a quick check while editing).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

install: $(STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "lab2 needs Python 3.10 or newer; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
