# The two commands of the README. Each sets itself up on a fresh machine: a .venv with the
# pinned requirements (re-installed only when requirements.txt changes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

.PHONY: setup demo executed test test-record lint clean-runs

$(STAMP): requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements.txt
	@touch $(STAMP)

setup: $(STAMP)

# Runs the five notebooks headless on the tiny profile (CPU, offline) into runs/<timestamp>/.
demo: setup
	$(PY) -m utils demo --profile $${DSS_PROFILE:-tiny}

# The demo again, then its five executed notebooks (outputs, figures, timings) into docs/executed/.
executed: setup
	$(PY) -m utils demo --profile tiny --publish-executed docs/executed

# The whole offline test suite (slow tests included; network/gpu tests skip themselves).
test: setup
	$(PY) -m pytest

# The whole suite again, timed: a run that passes writes its seconds, counts and machine into
# docs/executed/test_suite.json, the record the README's `make test` time is tied to (tests/test_docs.py).
test-record: setup
	DSS_TEST_RECORD=docs/executed/test_suite.json $(PY) -m pytest

lint: setup
	$(PY) -m ruff check utils tests benchmarks notebooks

clean-runs:
	rm -rf runs
