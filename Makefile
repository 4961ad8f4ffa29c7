# make install: a virtualenv with the runner and its test tools; make test: the suite;
# make demo: a real sweep against the bundled provider simulator (no keys, no network);
# make soak: the crash campaigns at full length: 200 SIGKILLs instead of the suite's 20, and ten
# three-runner repetitions instead of four;
# make bench: the benchmarks (docs/benchmarks.md), the official SDKs in a virtualenv of their own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BENCH_VENV := .venv-bench
# The runner as a user installs it (no test tools) for the benchmarks: the test tools' dependencies
# would be measured too.
RUN_VENV := .venv-run

.PHONY: install test demo soak bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

test: install
	$(BIN)/python -m pytest -q -n 2

soak: install
	RUNNER_SOAK_KILLS=200 RUNNER_SOAK_REPEATS=10 $(BIN)/python -m pytest -q tests/test_kill_campaign.py

demo: install
	$(BIN)/python -m runner model=kling prompt_set=ads simulate=true

bench: install $(BENCH_VENV)/.installed $(RUN_VENV)/.installed
	$(BIN)/python -m bench

$(RUN_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/pip install --quiet --upgrade pip
	$(RUN_VENV)/bin/pip install --quiet -e .
	touch $@

$(BENCH_VENV)/.installed: bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt
	touch $@

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(RUN_VENV) .runner outputs .pytest_cache
