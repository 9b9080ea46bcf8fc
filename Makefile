# One command each: `make install`, `make test`, `make lint`, `make bench`, `make package`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test lint bench package test-roots clean demo pyvenvs

# The editable install runs once, and again only when pyproject.toml changes (it names the
# dependencies); source edits need no reinstall. `make install` after a manual change to the
# venv: remove $(INSTALLED) first.
INSTALLED := $(VENV)/.installed

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(INSTALLED)

# tests/test_package.py installs the packages `make package` builds. The test target builds them
# first (outside the network namespace: pip needs PyPI) whenever the run includes those tests
# (no test path in PYTEST_ARGS, or test_package named) and they are missing or older than
# what goes into them; a run of other test files alone does not wait for a build.
PACKAGED := dist/.packaged
PACKAGE_INPUTS := pyproject.toml README.md $(shell find agent collector packaging systemd -type f \
	-not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null)
ifeq ($(findstring tests/,$(PYTEST_ARGS)),)
TEST_NEEDS := $(PACKAGED)
else ifneq ($(findstring test_package,$(PYTEST_ARGS)),)
TEST_NEEDS := $(PACKAGED)
endif

# Venvs of the other supported interpreters (Ubuntu 22.04's 3.10, Ubuntu 24.04's 3.12), from
# the image's pyenv builds, with the project and what its tests import:
# tests/test_python_versions.py runs part of the suite in each. Needs PyPI, so like `package`
# it runs outside the test network namespace; rebuilt when pyproject.toml changes. A missing
# interpreter fails here: they are part of the machine image, not optional.
PYENV_ROOT ?= /root/.pyenv
PYVENV_PYTHONS := 3.10.13 3.12.1
PYVENVS := .pyvenvs
PYVENVS_BUILT := $(PYVENVS)/.built

$(PYVENVS_BUILT): pyproject.toml
	@for v in $(PYVENV_PYTHONS); do \
		py=$(PYENV_ROOT)/versions/$$v/bin/python$${v%.*}; \
		[ -x "$$py" ] || { echo "pyvenvs: $$py is missing (part of the machine image)" >&2; exit 1; }; \
	done
	@for v in $(PYVENV_PYTHONS); do \
		minor=$${v%.*}; dir=$(PYVENVS)/$$minor; \
		[ -x $$dir/bin/python ] || $(PYENV_ROOT)/versions/$$v/bin/python$$minor -m venv $$dir || exit 1; \
		$$dir/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' || exit 1; \
	done
	touch $@

pyvenvs: $(PYVENVS_BUILT)

ifeq ($(findstring tests/,$(PYTEST_ARGS)),)
TEST_NEEDS += $(PYVENVS_BUILT)
else ifneq ($(findstring test_python_versions,$(PYTEST_ARGS)),)
TEST_NEEDS += $(PYVENVS_BUILT)
endif

# Tests run in a fresh network namespace with only loopback up: nothing can leave the machine,
# and the lab can bind the real ports (443, 53) on 127.0.0.x without clashing with anything.
test: install $(TEST_NEEDS)
	unshare --net -- sh -c 'ip link set lo up && exec $(PY) -m pytest $(PYTEST_ARGS)'

# Every benchmark (bench/run_all.py; figures in docs/performance.md), loopback only like the
# tests. BENCH_ARGS=--quick runs each in its smallest form.
BENCH_ARGS ?=
bench: install
	unshare --net -- sh -c 'ip link set lo up && exec $(PY) bench/run_all.py $(BENCH_ARGS)'

# The whole product on one machine (docs/demo.md): the DigiCert lab, the collector and four
# daemons in a private network namespace (the script unshares itself; needs root).
# DEMO_ARGS=--serve keeps it running until Ctrl-C.
DEMO_ARGS ?=
demo: install
	$(PY) scripts/demo.py $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check agent collector
	$(VENV)/bin/mypy --strict agent collector

# A .deb or .rpm per target distribution in dist/ (packaging/build.sh says how). Needs
# PyPI for the venv's dependencies, so run it outside the test network namespace.
package: install
	bash packaging/build.sh
	touch $(PACKAGED)

$(PACKAGED): $(INSTALLED) $(PACKAGE_INPUTS)
	bash packaging/build.sh
	touch $@

# Roots of other Debian releases for the boot tests (tests/distroots.py; docs/install.md):
# mmdebstrap fetches them from Debian's registry, so like `package` this runs outside the
# test network namespace. Cached under /var/cache/acme-preflight-test-roots, rebuilt daily.
test-roots: install
	$(PY) -m tests.distroots build

clean:
	rm -rf $(VENV) $(PYVENVS) dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache
