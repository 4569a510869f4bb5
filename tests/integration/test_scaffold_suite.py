"""The project ``dagrelay init`` writes: its tests pass as its README runs them (pytest in the
project's directory; here with this checkout's dagrelay, tests/e2e/test_project.py does it from
the wheel in a fresh venv), and its test requirements pin dagrelay's ``testing`` extra, which
pins pytest, while requirements.txt (what is deployed) stays free of it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from dagrelay.scaffold import write_project
from tests.dbtools import ADMIN_URL

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_the_test_requirements_install_pytest_through_the_testing_extra(tmp_path: Path) -> None:
    written = write_project(tmp_path / "acme")
    dev = (tmp_path / "acme" / "requirements-dev.txt").read_text().splitlines()
    assert "requirements-dev.txt" in written.files
    assert [line for line in dev if line and not line.startswith("#")] == [
        "-r requirements.txt",
        f"dagrelay[testing]=={metadata.version('dagrelay')}",
    ]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert [r for r in extras["optional-dependencies"]["testing"] if r.startswith("pytest")] == [
        next(r for r in extras["optional-dependencies"]["dev"] if r.startswith("pytest=="))
    ], "the testing extra pins the pytest we test with"
    assert "pytest" not in (tmp_path / "acme" / "requirements.txt").read_text()


def test_the_scaffolds_own_tests_pass(tmp_path: Path) -> None:
    write_project(tmp_path / "acme")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGRELAY_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:bqemulator"],
        cwd=tmp_path / "acme",
        env=env | {"DAGRELAY_TEST_ADMIN_URL": ADMIN_URL},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
