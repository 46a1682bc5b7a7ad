# The project's verbs.  Everything runs from a fresh clone with only Python 3.11/3.12 and make.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test smoke lint format eval bench-broker bench-e2e bench-extract bench-replay bench-admin chaos clean

$(STAMP): setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "nexus needs Python 3.11 or 3.12 (pgserver ships wheels for those only)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

run: install  ## web + worker + clock on the embedded database (or DATABASE_URL) until Ctrl-C
	$(BIN)/nexus run

test: install  ## the whole suite against a real PostgreSQL
	$(BIN)/pytest

smoke: install  ## POST the seed's conversation end to end on a fresh database
	$(BIN)/nexus smoke

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

eval: install  ## per-field accuracy of each extractor on tests/data
	$(BIN)/python bench/eval.py

bench-broker: install  ## our broker against dramatiq-postgres, same machine, same run
	$(BIN)/python bench/broker.py

bench-e2e: install  ## POST-to-completed latency over 1,000 posts through gunicorn
	$(BIN)/python bench/e2e.py

bench-extract: install  ## rules extractor's worst case per conversation on 1 MiB attacks
	$(BIN)/python bench/extraction_worst.py

bench-replay: install  ## paid Claude calls per chat, before and after the debounce (stub API)
	$(BIN)/python bench/replay.py $(REPLAY_ARGS)

bench-admin: install  ## /metrics, /admin, /api/nexus/stats with 1,000,000 queue rows (ROWS=...)
	$(BIN)/python bench/admin_scale.py --rows $(or $(ROWS),1000000)

clean:
	rm -rf $(VENV) .pgdata bench/.peer-venv
