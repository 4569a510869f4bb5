"""pyproject.toml's package list and data mapping agree with the tree and with the resource
lookup (setuptools cannot discover the mapped data subpackages, so the list is written out)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from dagrelay import resources
from dagrelay.ops.packaging import runtime_requirements

REPO = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def test_every_subpackage_of_the_tree_is_listed() -> None:
    root = REPO / "functions"
    on_disk = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "dagrelay").rglob("__init__.py")
    }
    mapped = {f"dagrelay.{name}" for name in resources.LAYOUT}
    assert set(SETUPTOOLS["packages"]) == on_disk | mapped


def test_data_mapping_is_the_one_the_lookup_uses() -> None:
    mapping = {k: v for k, v in SETUPTOOLS["package-dir"].items() if k}
    assert mapping == {f"dagrelay.{name}": path for name, path in resources.LAYOUT.items()}


def test_installed_metadata_pins_what_pyproject_pins() -> None:
    """A stale editable install would build an archive with old requirements."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert runtime_requirements() == sorted(project["dependencies"], key=str.lower)
