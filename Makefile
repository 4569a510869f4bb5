# Two commands on a fresh machine: `make demo` runs the example end to end, `make test` runs
# every check. Both create the virtualenv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

CHECKOV := .venv-checkov/.installed-stamp
# Offline `terraform test` (tests/tools/tf_offline.py): the schema-only provider plugins, their
# virtualenv (the PyPI package tf, for the plugin protocol's messages) and the npm packages the
# schemas come from, all under one ignored directory.
TF_OFFLINE := .terraform-offline
TF_VENV := $(TF_OFFLINE)/venv/.installed-stamp

.PHONY: demo test lint typecheck pytest unit integration e2e chromium up down venv clean \
	terraform-check terraform-plugins bytecode bench bench-scale sql-functions dist soak

# uv (PyPI; the version pinned in pyproject.toml's dev extra, put into .venv by the machine's pip)
# installs both virtualenvs: seconds where pip spends minutes looking packages up. Its cache
# (~/.cache/uv) keeps what it downloaded for the next install on the machine.
UV := $(BIN)/uv
UV_VERSION := $(shell sed -n 's/^ *"uv==\([^"]*\)".*/\1/p' pyproject.toml)

$(UV):
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet uv==$(UV_VERSION)

# Where Python may not write bytecode (PYTHONDONTWRITEBYTECODE set, as on our CI machine), the
# virtualenvs are installed with every module compiled (--compile-bytecode); otherwise each
# process would compile each dependency again: importing the router's code cost 2.5 CPU-s
# instead of 0.85, in each of the hundreds of processes a test run starts. Where Python writes
# bytecode, the first import writes it and compiling everything up front would cost more.
COMPILE := $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode,)

$(STAMP): pyproject.toml | $(UV)
	$(UV) pip install --quiet $(COMPILE) --python $(BIN)/python \
		--upgrade-package pip pip -e '.[dev,local]'
	touch $(STAMP)

# The checkout's own modules, compiled the same way (incremental: only what changed since).
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 functions local_emulator tests

venv: $(STAMP)

# checkov lives in its own venv: its bc-python-hcl2 and python-hcl2 both install `hcl2`.
$(CHECKOV): | $(UV)
	$(PYTHON) -m venv --without-pip .venv-checkov
	$(UV) pip install --quiet $(COMPILE) --python .venv-checkov/bin/python checkov==3.3.30
	touch $(CHECKOV)

$(TF_VENV): | $(UV)
	$(PYTHON) -m venv --without-pip $(TF_OFFLINE)/venv
	$(UV) pip install --quiet $(COMPILE) --python $(TF_OFFLINE)/venv/bin/python tf==1.2.0
	touch $(TF_VENV)

# The google and random providers' schemas (npm: @cdktf/provider-*) served by schema-only
# plugins; rebuilt only when their inputs change. DAGRELAY_TERRAFORM_REGISTRY=1: not needed (the
# real providers come from the registry).
terraform-plugins: $(TF_VENV)
	@if [ "$$DAGRELAY_TERRAFORM_REGISTRY" != 1 ]; then \
		$(TF_OFFLINE)/venv/bin/python -m tests.tools.tf_offline $(TF_OFFLINE); fi

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
# and a real browser). Integration and e2e each run on WORKERS pytest-xdist workers, each worker
# with databases and a Pub/Sub emulator of its own (tests/db_fixtures.py) and, in e2e, local
# stacks of its own on free ports; WORKERS=0 runs a tier in one process. A module stays on one
# worker (its module fixtures are built once); modules go out longest first (tests/conftest.py);
# the ten slowest tests are listed at the end, to keep the long_pole marks true.
# HYPOTHESIS_PROFILE=soak (or ci) runs the property tests with more examples (tests/conftest.py).
WORKERS ?= 2
XDIST = -n $(WORKERS) --dist loadscope --no-loadscope-reorder --durations=10

unit: $(STAMP) bytecode
	$(BIN)/pytest tests/unit

integration: $(STAMP) bytecode
	$(BIN)/pytest tests/integration $(XDIST)

# test_project.py runs checkov on the scaffold's Terraform.
e2e: $(STAMP) bytecode $(CHECKOV) chromium
	$(BIN)/pytest tests/e2e $(XDIST)

pytest: unit integration e2e

# The browser test drives Debian's Chromium (/usr/bin/chromium); install it when missing.
CHROMIUM_INSTALL := apt-get update -qq && apt-get install -y -qq chromium
chromium:
	@test -x /usr/bin/chromium || { \
		echo "installing Chromium for the browser test: $(CHROMIUM_INSTALL)"; \
		if [ "$$(id -u)" = 0 ]; then $(CHROMIUM_INSTALL); else sudo -n sh -c '$(CHROMIUM_INSTALL)'; fi \
		|| { echo "could not install Chromium; run as root: $(CHROMIUM_INSTALL)" >&2; exit 1; }; }

# fmt, checkov, then `terraform test` of the module, terraform/deploy and the `dagrelay init`
# root, each with its defaults and with examples/prod.tfvars (tests/tools/tf_plan.py).
terraform-check: $(CHECKOV) $(STAMP) terraform-plugins
	terraform fmt -check -recursive terraform
	terraform fmt -check -recursive tests/terraform
	.venv-checkov/bin/checkov -d terraform --framework terraform --skip-download --compact --quiet
	$(TF_OFFLINE)/venv/bin/python -m tests.tools.tf_plan $(TF_OFFLINE) $(BIN)/dagrelay

# Everything at once, the long tiers first: e2e and integration spend much of their time waiting
# on subprocesses, the emulators and PostgreSQL, so the quick checks and the other tier fill the
# two cores meanwhile. Each target's output is printed together when it ends.
test: $(STAMP)
	$(MAKE) -j6 --output-sync=target e2e integration lint typecheck terraform-check unit

# The release artifacts: dist/dagrelay-X.Y.Z.tar.gz and dist/dagrelay-X.Y.Z-py3-none-any.whl,
# the same bytes on every build of a commit (SOURCE_DATE_EPOCH: the last commit's time).
# RELEASING.md says what to do with them.
dist: $(STAMP)
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(BIN)/python .ci/dist.py --outdir dist

clean:
	rm -rf $(VENV) .venv-checkov $(TF_OFFLINE) .local_stack .mypy_cache .ruff_cache .pytest_cache .import_linter_cache test-artifacts \
		build/test-dist
