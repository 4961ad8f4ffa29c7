# make install: a virtualenv with the runner and its test tools; make test: the suite;
# make demo: a real sweep against the bundled provider simulator (no keys, no network).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python -m runner model=kling prompt_set=ads simulate=true

clean:
	rm -rf $(VENV) .runner outputs .pytest_cache
