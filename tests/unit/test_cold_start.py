"""Each entry point of functions/main.py imports only what it needs (the import graph is checked
by import-linter; this checks what a fresh interpreter really loads, lazy imports included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    ],
)
def test_an_entry_point_loads_only_what_it_needs(entry: str, never: tuple[str, ...]) -> None:
    loaded = loaded_after(entry)
    assert entry in loaded
    assert not set(never) & loaded
