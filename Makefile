# One command each: `make install`, `make test`, `make lint`, `make bench`, `make package`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test lint bench package clean demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'

# Tests run in a fresh network namespace with only loopback up: nothing can leave the machine,
# and the lab can bind the real ports (443, 53) on 127.0.0.x without clashing with anything.
test: install
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

# dist/acme-preflight_<version>_<arch>.deb and the .rpm (packaging/build.sh says how). Needs
# PyPI for the venv's dependencies, so run it outside the test network namespace.
package: install
	bash packaging/build.sh

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache
