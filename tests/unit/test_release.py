"""Releases: one version (pyproject's, read through the package metadata), `dagrelay --version`,
a changelog entry for the version naming every migration and setting, and every place that
names a release following the tag scheme vX.Y.Z."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dagrelay
from dagrelay import cli
from dagrelay.config import Settings
from dagrelay.scaffold import GIT_MODULE

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
CHANGELOG = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
TAG = f"v{VERSION}"


def release_entries() -> dict[str, str]:
    """{version or 'Unreleased': the text of its section}."""
    parts = re.split(r"^## \[([^\]]+)\].*$", CHANGELOG, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_version_has_one_source() -> None:
    assert metadata.version("dagrelay") == VERSION  # a stale install would say otherwise
    assert dagrelay.__version__ == VERSION
    assert "__version__ =" not in (REPO / "functions/dagrelay/__init__.py").read_text()


def test_dagrelay_version() -> None:
    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"dagrelay {VERSION}\n"


def test_the_changelog_has_unreleased_and_the_current_version() -> None:
    entries = release_entries()
    assert list(entries)[:1] == ["Unreleased"]
    assert VERSION in entries
    assert re.search(rf"^## \[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", CHANGELOG, re.M)
    assert f"[{VERSION}]: https://github.com/dagrelay/dagrelay/releases/tag/{TAG}" in CHANGELOG


def test_every_migration_is_named_in_a_release() -> None:
    revisions = sorted(p.name[:4] for p in (REPO / "migrations/versions").glob("[0-9]*.py"))
    named = set(re.findall(r"^\| (\d{4}) \|", CHANGELOG, flags=re.MULTILINE))
    assert [r for r in revisions if r not in named] == []


@pytest.mark.parametrize("setting", sorted(Settings.model_fields))
def test_every_setting_is_named_in_the_changelog(setting: str) -> None:
    assert f"`{setting}`" in CHANGELOG


def test_releases_are_named_by_the_tag_scheme() -> None:
    """The scaffold's Terraform and README, the README and RELEASING.md all name vX.Y.Z."""
    assert GIT_MODULE.format(version=VERSION).endswith(f"//terraform?ref={TAG}")
    wheel = f"releases/download/{TAG}/dagrelay-{VERSION}-py3-none-any.whl"
    assert wheel in (REPO / "README.md").read_text()
    assert f"dagrelay.git@{TAG}" in (REPO / "README.md").read_text()
    template = (REPO / "functions/dagrelay/scaffold/template/README.md.tmpl").read_text()
    assert "releases/download/v__VERSION__/dagrelay-__VERSION__-py3-none-any.whl" in template
    assert "git tag -a vX.Y.Z" in (REPO / "RELEASING.md").read_text()
