# Two commands on a fresh machine: `make demo` runs the example end to end, `make test` runs
# every check. Both create the virtualenv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

CHECKOV := .venv-checkov/.installed-stamp

.PHONY: demo test lint typecheck pytest unit integration e2e chromium up down venv clean \
	terraform-check bench bench-scale sql-functions dist soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,local]'
	touch $(STAMP)

venv: $(STAMP)

# checkov lives in its own venv: its bc-python-hcl2 and python-hcl2 both install `hcl2`.
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet checkov==3.3.30
	touch $(CHECKOV)

demo: $(STAMP)
	$(BIN)/python -m local_emulator demo

# Benchmarks are not tests: a table on stdout and bench-results.json (see local_emulator/bench/).
bench: $(STAMP)
	$(BIN)/python -m local_emulator bench

# A thousand tasks at once on 25 connections, and no-op throughput at K = 1, 2, 4, 8 router
# instances (about 4 minutes: beside `make bench`, not in it; README.md, "Capacity").
bench-scale: $(STAMP)
	$(BIN)/python -m local_emulator.bench.scale

# schema/functions/: the live text of each SQL function, from a database migrated to head (run
# after a migration that changes a function; tests/integration/test_sql_functions.py checks it).
sql-functions: $(STAMP)
	$(BIN)/python -m tests.tools.dump_functions

up: $(STAMP)
	$(BIN)/python -m local_emulator up

down: $(STAMP)
	$(BIN)/python -m local_emulator down

# The model-based test at length (not part of `make test`): DAGRELAY_SOAK_EXAMPLES examples
# (10 000 by default) of tests/integration/test_state_machine.py; prints what it covered.
soak: $(STAMP)
	DAGRELAY_MODEL_PROFILE=soak $(BIN)/pytest tests/integration/test_state_machine.py -s -q -p no:logging

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# tests/typecheck: lines that must stay type errors (the typed Python pipeline API).
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests/typecheck

# The test tiers, each its own pytest run: unit (pure logic, no database, no subprocess:
# seconds), integration (the real PostgreSQL and Pub/Sub emulator), e2e (the whole local stack,
# and a real browser). Integration runs on WORKERS pytest-xdist workers, each with a database and
# a Pub/Sub emulator of its own (tests/db_fixtures.py); WORKERS=0 runs it in one process. e2e
# stays serial: each worker would start a whole local stack. HYPOTHESIS_PROFILE=soak (or ci)
# runs the property tests with more examples (tests/conftest.py).
WORKERS ?= 2

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration -n $(WORKERS) --dist loadscope

e2e: $(STAMP) chromium
	$(BIN)/pytest tests/e2e

pytest: unit integration e2e

# The browser test drives Debian's Chromium (/usr/bin/chromium); install it when missing.
CHROMIUM_INSTALL := apt-get update -qq && apt-get install -y -qq chromium
chromium:
	@test -x /usr/bin/chromium || { \
		echo "installing Chromium for the browser test: $(CHROMIUM_INSTALL)"; \
		if [ "$$(id -u)" = 0 ]; then $(CHROMIUM_INSTALL); else sudo -n sh -c '$(CHROMIUM_INSTALL)'; fi \
		|| { echo "could not install Chromium; run as root: $(CHROMIUM_INSTALL)" >&2; exit 1; }; }

terraform-check: $(CHECKOV)
	terraform fmt -check -recursive terraform
	.venv-checkov/bin/checkov -d terraform --framework terraform --skip-download --compact --quiet

# The quick checks two at a time (each one's output kept together), then the slow tiers.
test: $(STAMP)
	$(MAKE) -j2 --output-sync=target lint typecheck terraform-check unit
	$(MAKE) integration
	$(MAKE) e2e

# The release artifacts: dist/dagrelay-X.Y.Z.tar.gz and dist/dagrelay-X.Y.Z-py3-none-any.whl,
# the same bytes on every build of a commit (SOURCE_DATE_EPOCH: the last commit's time).
# RELEASING.md says what to do with them.
dist: $(STAMP)
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(BIN)/python .ci/dist.py --outdir dist

clean:
	rm -rf $(VENV) .venv-checkov .local_stack .mypy_cache .ruff_cache .pytest_cache .import_linter_cache test-artifacts
