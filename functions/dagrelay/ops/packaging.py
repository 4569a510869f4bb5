"""Builds the Cloud Function source archive: ``main.py``, the ``dagrelay`` package with the
run-time files of its schema directory (named SQL, message schemas) and a ``requirements.txt``
pinned exactly as the installed distribution pins its runtime dependencies. Everything is taken
from the installed package (a wheel or an editable checkout, see dagrelay/resources.py), so it
works from any install. One archive serves Terraform and ``gcloud functions deploy --source``."""

from __future__ import annotations

import zipfile
from importlib import metadata
from pathlib import Path

from dagrelay import resources
from dagrelay.errors import ConfigError

SCHEMA_FILES = (
    "sql/*.sql",
    "openapi.json",
    "sources.yaml",
    "sources.schema.json",
    "names.schema.json",
    "pipelines/**/*.sql",
    "messages/*.json",
)
PACKAGE_SUFFIXES = {".py", ".typed", ".html", ".css", ".js", ".svg", ".json", ".md"}
# Fixed timestamps make the archive byte-for-byte reproducible (Terraform hashes it).
EPOCH = (1980, 1, 1, 0, 0, 0)


def runtime_requirements(distribution: str = "dagrelay") -> list[str]:
    """The installed distribution's requirements that no extra guards, each pinned with ==."""
    declared = metadata.requires(distribution) or []
    requirements = [r for r in declared if ";" not in r]
    unpinned = [r for r in requirements if "==" not in r]
    if unpinned:
        raise ConfigError(f"runtime dependencies must be pinned with ==: {unpinned}")
    return sorted(requirements, key=str.lower)


def archive_members() -> dict[str, Path]:
    """{name in the archive: file on disk}."""
    members = {"main.py": resources.function_entry()}
    package = resources.package_root()
    for path in sorted(package.rglob("*")):
        inside = path.relative_to(package)
        if _is_package_file(path, inside):
            members[f"dagrelay/{inside.as_posix()}"] = path
    schema = resources.data_dir("_schema", marker="sql/tasks.sql")
    for pattern in SCHEMA_FILES:
        for path in sorted(schema.glob(pattern)):
            members[f"dagrelay/_schema/{path.relative_to(schema).as_posix()}"] = path
    return members


def _is_package_file(path: Path, inside: Path) -> bool:
    skipped = {"__pycache__", *resources.LAYOUT}  # the data directories are chosen above
    return path.is_file() and not skipped & set(inside.parts) and path.suffix in PACKAGE_SUFFIXES


def build_archive(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    requirements = "\n".join(runtime_requirements()) + "\n"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in archive_members().items():
            archive.writestr(zipfile.ZipInfo(name, EPOCH), path.read_bytes())
        archive.writestr(zipfile.ZipInfo("requirements.txt", EPOCH), requirements)
    return out
