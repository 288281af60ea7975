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

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) outputs
