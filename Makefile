# The two set-up commands of the README: `make quickstart` (the main job) and `make test` (CI's suite).
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Writes under runs/ only (git ignores it): runs/quickstart/<run>/ and the report in runs/quickstart/report/.
quickstart: $(VENV)/.installed
	$(VENV)/bin/senet-ablate quickstart

# Rewrites the committed results/quickstart/ (then refresh the README's quote: python -m ablations.reporting.verdicts).
quickstart-results: $(VENV)/.installed
	$(VENV)/bin/senet-ablate quickstart --results-dir results/quickstart

# The whole suite, slow integration tests included (what CI runs).
test: $(VENV)/.installed
	$(PY) -m pytest -m '' -q --durations=25

# The fast subset for the edit-test loop.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q

complexity: $(VENV)/.installed
	$(VENV)/bin/senet-ablate complexity --table all

.PHONY: install quickstart quickstart-results test test-fast complexity
