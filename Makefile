# `make demo` and `make test` work on a fresh clone: each creates .venv and installs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-peer lint fmt simulate bench chaos chaos-crash crash clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/itsm-sync demo

simulate: $(STAMP)
	$(BIN)/itsm-sync simulate

# Six workers on two cores: most tests wait on simulators and polls, not on the CPU; an idle
# worker takes tests queued on a busy one (worksteal), so a slow test does not make a long tail.
test: $(STAMP)
	$(BIN)/python -m pytest -n 6 --dist worksteal -q

# Benchmarks with printed figures (docs/performance.md); BENCH_ARGS=--small for a quick run.
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

# The chaos run (tests/chaos/run.py, docs/operations.md "Chaos run"): >=100 incidents on
# PostgreSQL, two services, a quarter of API calls failing, webhooks dropped/delayed/duplicated,
# SIGKILLs; prints six counts that must all be 0 (exit status 1 otherwise). CHAOS_ARGS=--help.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

# The older large crash-safety tests (kill -9 mid-sync, 200 incidents, no API faults): their
# fixed 30 s start-up and HTTP timeouts fail on a loaded 2-core machine, so they run apart.
chaos-crash: $(STAMP)
	$(BIN)/python -m pytest -m 'slow or crash' tests/chaos -q

# The tests that kill a process (kill -9 mid-sync, a dead worker process, a crash between
# creating a change and recording it): about two minutes; .ci/run runs them after make test.
crash: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m crash tests/chaos tests/e2e -q

# The client libraries' own live-API suites (pycontribs/jira, PySNC) against the simulators,
# extracted at pinned commits from local git directories (tests/peer/README.md); own venv.
PEER_VENV := $(VENV)/peer
PEER_STAMP := $(PEER_VENV)/.installed

$(PEER_STAMP): pyproject.toml tests/peer/requirements.txt
	test -x $(PEER_VENV)/bin/python || $(PY) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEER_VENV)/bin/python -m pip install -q -e '.[test]' -r tests/peer/requirements.txt
	touch $(PEER_STAMP)

test-peer:
	$(PY) -m tests.peer.sources
	$(MAKE) $(PEER_STAMP)
	$(PEER_VENV)/bin/python -m tests.peer.run $(PEER_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy config connectors sync mapping postmortem_tracker simulators service

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
