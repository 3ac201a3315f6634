# Two commands on a fresh machine (Python 3.11 on the PATH as python3):
#   make demo   the main job on the embedded default (local S3 server, local Ray, synthetic patients)
#   make test   the test suite (what CI runs)
# Each creates .venv and installs the project first when pyproject.toml is newer than the install.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test install clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -e '.[test]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/python -m medeid.demo

test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache *.egg-info
