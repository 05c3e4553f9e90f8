# The README's two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

.PHONY: setup tools checkov demo lint test test-unit clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q -U pip
	$(PY) -m pip install $(PIP_FLAGS) -q -e '.[dev]' -c constraints.txt
	touch $@

setup: $(VENV)/.installed
	$(VENV)/bin/skinbatch localstack fetch

# Every program the tests run against, installed when missing: promtool (Prometheus configs), Chromium
# (the HTML report renders), Orthanc with its DICOMweb plugin (a real PACS), the DICOM validators that check
# every structured report, dciodvfy (dicom3tools) and dsrdump (DCMTK), openssl (test certificates), Go
# (compose-go checks compose.yaml), and kubectl, or kustomize built from its Go module where Debian has no
# kubectl. Debian packages come from apt as root. Missing tools fail here in CI (CI set), where a test
# that skipped for want of them would hide missing evidence; elsewhere their tests skip and say why.
TOOLS_APT := prometheus chromium orthanc orthanc-dicomweb dicom3tools dcmtk openssl golang-go nginx-light \
  libheif-examples webp libtiff-tools liblcms2-utils icc-profiles-free imagemagick libavif-bin
TOOLS_BIN := promtool chromium Orthanc dciodvfy dsrdump openssl nginx go heif-enc cwebp tiffcp jpgicc convert-im6.q16 avifenc
GO_BIN := $(HOME)/.cache/skinbatch/go-bin
KUSTOMIZE_MODULE := sigs.k8s.io/kustomize/kustomize/v5@v5.5.0

tools:
	@missing=""; for t in $(TOOLS_BIN); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	[ -e /usr/share/color/icc/compatibleWithAdobeRGB1998.icc ] || missing="$$missing icc-profiles-free"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing the test tools (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(TOOLS_APT) >/dev/null || echo "apt-get could not install the test tools"; \
	  else echo "cannot install the test tools (missing:$$missing): not root, or no apt-get"; fi; \
	fi
	@if ! command -v kubectl >/dev/null && [ ! -x $(GO_BIN)/kustomize ] && command -v go >/dev/null; then \
	  echo "building kustomize ($(KUSTOMIZE_MODULE)): kubectl is not installed"; \
	  GOBIN=$(GO_BIN) go install $(KUSTOMIZE_MODULE) || echo "could not build kustomize"; fi
	@# ORY Hydra (an OAuth2 issuer) and oauth2-proxy (a gateway) for the archive's OAuth2 tests, built once
	@# into $(GO_BIN) from the Go module proxy (tests/fixtures/go_tools.py says how).
	@[ -x $(GO_BIN)/hydra ] && [ -x $(GO_BIN)/oauth2-proxy ] || ! command -v go >/dev/null \
	  || $(PY) -m tests.fixtures.go_tools >/dev/null || echo "could not build hydra/oauth2-proxy"
	@missing=""; for t in $(TOOLS_BIN); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	[ -e /usr/share/color/icc/compatibleWithAdobeRGB1998.icc ] || missing="$$missing icc-profiles-free"; \
	[ -x $(GO_BIN)/hydra ] && [ -x $(GO_BIN)/oauth2-proxy ] || missing="$$missing hydra/oauth2-proxy"; \
	command -v kubectl >/dev/null || [ -x $(GO_BIN)/kustomize ] || missing="$$missing kubectl/kustomize"; \
	if [ -n "$$missing" ]; then \
	  echo "test tools still missing:$$missing; their tests skip here and fail in CI"; \
	  case "$${CI:-}" in ""|0|false|no) ;; *) exit 1;; esac; fi

# checkov (a third-party scanner of the Kubernetes manifests and Dockerfiles) in a virtualenv of its own: its
# dependencies would clash with the project's.
CHECKOV_VENV ?= .venv-checkov
checkov: $(CHECKOV_VENV)/.installed
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install $(PIP_FLAGS) -q checkov==3.3.30
	touch $@

demo: setup
	$(VENV)/bin/skinbatch demo

# ruff over the whole tree and mypy over the package; their settings are in pyproject.toml. First in
# `make test`, so that CI fails in seconds on a lint or type error, before the slow setup.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint setup tools checkov
	$(PY) -m pytest -q

test-unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
