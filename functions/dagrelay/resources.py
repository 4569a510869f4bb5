"""Where the files dagrelay loads at run time live.

They are kept at the repository's top level — ``schema/`` (named SQL, JSON Schemas),
``migrations/`` (Alembic) and ``functions/main.py`` (the Cloud Functions' entry module) — and
ship inside the package as ``dagrelay/_schema``, ``dagrelay/_migrations`` and
``dagrelay/_function`` (the package-dir mapping in pyproject.toml). A wheel and the function
archive find them there through importlib.resources, from any working directory. An editable
install has no such directories (setuptools' editable finder cannot import a mapped subpackage
without ``__init__.py``), so it reads the checkout the package sits in. ``DAGRELAY_SCHEMA_DIR``
and ``DAGRELAY_MIGRATIONS_DIR`` override both.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path

from dagrelay.errors import ConfigError

# {directory inside the package: the same directory in a checkout}, as pyproject.toml maps them.
LAYOUT = {"_schema": "schema", "_migrations": "migrations", "_function": "functions"}
_CHECKOUT = Path(__file__).resolve().parents[2]


@cache
def schema_dir() -> Path:
    return data_dir("_schema", marker="sql/tasks.sql", override="DAGRELAY_SCHEMA_DIR")


def migrations_dir() -> Path:
    return data_dir("_migrations", marker="env.py", override="DAGRELAY_MIGRATIONS_DIR")


def function_entry() -> Path:
    """``main.py`` of the Cloud Functions (the archive's entry module)."""
    return data_dir("_function", marker="main.py") / "main.py"


def package_root() -> Path:
    """The installed ``dagrelay`` package's directory."""
    root = resources.files("dagrelay")
    if not isinstance(root, Path):
        raise ConfigError(f"dagrelay is not installed as files on disk ({root})")
    return root


def data_dir(name: str, *, marker: str, override: str | None = None) -> Path:
    """The directory ``name`` of LAYOUT: the one holding ``marker`` among the override, the
    installed package and the checkout, in that order."""
    value = os.environ.get(override) if override else None
    candidates = [Path(value)] if value else []
    candidates += [package_root() / name, _CHECKOUT / LAYOUT[name]]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{LAYOUT[name]}/ with {marker} not found (searched {searched})")
