"""``dagrelay local``: without the ``local`` extra it names the pip command; the modules it
checks are the extra's (pyproject.toml)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dagrelay.cli import app
from dagrelay.cli import local as local_cli

REPO = Path(__file__).resolve().parents[2]


def test_checked_modules_are_the_local_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"]["local"]
    names = {re.split(r"[=<>\[;]", r, maxsplit=1)[0].replace("-", "_") for r in extra}
    assert names == set(local_cli.EXTRA_MODULES)


def test_missing_extra_lists_what_cannot_be_imported() -> None:
    found = {"duckdb", "numpy"}
    missing = local_cli.missing_extra(
        ("bqemulator", "duckdb", "numpy", "requests"),
        find=lambda name: object() if name in found else None,
    )
    assert missing == ["bqemulator", "requests"]


@pytest.mark.parametrize("verb", ["up", "down", "demo"])
def test_each_verb_names_the_pip_command_when_the_extra_is_missing(
    monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    monkeypatch.setattr(local_cli, "EXTRA_MODULES", ("dagrelay_no_such_module",))
    result = CliRunner().invoke(app, ["local", verb])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: the local stack needs the local extra (missing: dagrelay_no_such_module): "
        "pip install 'dagrelay[local]'\n"
    )
