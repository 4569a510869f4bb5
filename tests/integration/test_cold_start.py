"""Each entry point of functions/main.py imports only what it needs (the import graph is checked
by import-linter; this checks what a fresh interpreter really loads, lazy imports included).
Fresh interpreters are subprocesses, so these live in the integration tier, not in unit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
HEAVY = ("pyarrow", "google.cloud.bigquery", "google.cloud.pubsub_v1", "google.cloud.storage")
PROBE = """
import importlib, json, sys
import main
for module in sys.argv[1:]:
    importlib.import_module(module)
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("dagrelay", "pyarrow", "google")))))
"""


def loaded_after(*modules: str) -> set[str]:
    """Modules loaded by ``import main`` and then ``modules``, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        cwd=FUNCTIONS,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(result.stdout))


def test_importing_main_loads_neither_side() -> None:
    loaded = loaded_after()
    assert not {"dagrelay.router.wiring", "dagrelay.dashboard.app", *HEAVY} & loaded


@pytest.mark.parametrize(
    ("entry", "never"),
    [
        pytest.param("dagrelay.dashboard.app", HEAVY, id="status"),
        pytest.param("dagrelay.router.wiring", ("pyarrow", "google.cloud.storage"), id="router"),
        # `python -m dagrelay.local worker`: the command module, then the worker it imports.
        pytest.param(
            "dagrelay.local.commands",
            ("pyarrow", "google.cloud.storage", "dagrelay.local.stack", "dagrelay.local.demo"),
            id="pull worker command",
        ),
        pytest.param(
            "dagrelay.local.worker",
            ("pyarrow", "google.cloud.storage", "dagrelay.local.stack"),
            id="pull worker",
        ),
    ],
)
def test_an_entry_point_loads_only_what_it_needs(entry: str, never: tuple[str, ...]) -> None:
    loaded = loaded_after(entry)
    assert entry in loaded
    assert not set(never) & loaded


REGISTRY_PROBE = """
import json, sys
from dagrelay.handlers.registry import default_registry
default_registry.load_plugins([])
for name in sys.argv[1:]:
    default_registry.get(name)
print(json.dumps("google.cloud.bigquery" in sys.modules))
"""


@pytest.mark.parametrize(
    ("names", "bigquery_loaded"),
    [
        pytest.param((), False, id="plugins loaded"),
        pytest.param(("python.noop",), False, id="a python task"),
        pytest.param(("bigquery.query",), True, id="a BigQuery task"),
    ],
)
def test_the_bigquery_client_is_imported_by_the_first_bigquery_task(
    names: tuple[str, ...], bigquery_loaded: bool
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", REGISTRY_PROBE, *names],
        cwd=FUNCTIONS,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout) is bigquery_loaded
