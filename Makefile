# make install: a virtualenv with the runner and its test tools; make test: the suite;
# make demo: a real sweep against the bundled provider simulator (no keys, no network);
# make soak: the crash campaign with 200 SIGKILLs instead of the suite's 20.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

test: install
	$(BIN)/python -m pytest -q -n 2

soak: install
	RUNNER_SOAK_KILLS=200 $(BIN)/python -m pytest -q tests/test_kill_campaign.py -k campaign_never_pays_twice

demo: install
	$(BIN)/python -m runner model=kling prompt_set=ads simulate=true

clean:
	rm -rf $(VENV) .runner outputs .pytest_cache
