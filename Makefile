# The README's two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

.PHONY: setup tools demo lint test test-unit clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q -U pip
	$(PY) -m pip install $(PIP_FLAGS) -q -e '.[dev]' -c constraints.txt
	touch $@

setup: $(VENV)/.installed
	$(VENV)/bin/skinbatch localstack fetch

# Debian tools some tests use: promtool (Prometheus configs), Chromium (the HTML report renders),
# Orthanc with its DICOMweb plugin (a real PACS for the DICOMweb tests), and the DICOM validators that
# check every structured report: dciodvfy (dicom3tools) and dsrdump (DCMTK).
# Installed when missing and this is a root shell with apt (CI, fresh dev machines); otherwise those
# tests skip and say why (in CI, where CI is set, the SR validator tests fail instead).
tools:
	@if command -v promtool >/dev/null && command -v chromium >/dev/null && command -v Orthanc >/dev/null \
	  && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
	  && command -v dciodvfy >/dev/null && command -v dsrdump >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus chromium orthanc orthanc-dicomweb dicom3tools dcmtk >/dev/null) \
	    || echo "note: could not install promtool/chromium/orthanc/dicom3tools/dcmtk; their tests will skip"; \
	else echo "note: promtool/chromium/orthanc/dicom3tools/dcmtk missing; their tests will skip"; fi

demo: setup
	$(VENV)/bin/skinbatch demo

# ruff over the whole tree and mypy over the package; their settings are in pyproject.toml. First in
# `make test`, so that CI fails in seconds on a lint or type error, before the slow setup.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint setup tools
	$(PY) -m pytest -q

test-unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
