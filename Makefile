# The README's two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

.PHONY: setup demo test test-unit bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q -U pip
	$(PY) -m pip install $(PIP_FLAGS) -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed
	$(VENV)/bin/skinbatch localstack fetch

demo: setup
	$(VENV)/bin/skinbatch demo

test: setup
	$(PY) -m pytest -q

test-unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
