VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

# Reinstall only when the package metadata (pyproject.toml, setup.py) changes, so repeated calls are quick.
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade --quiet pip
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(PY) tools/train_net.py

# Two pytest-xdist workers, one test file each at a time (a file's fixtures are built once); most
# tests run one thread or wait on a subprocess, so two at once use both cores. PYTEST_WORKERS=0:
# one process.
PYTEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=20 tests

clean:
	rm -rf $(VENV) outputs
