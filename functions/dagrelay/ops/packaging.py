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
from dagrelay.ops.project import Project, merge_requirements

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


def build_archive(out: Path, project: Path | None = None) -> Path:
    """The archive at ``out``; with ``project``, the team's project too (ops/project.py)."""
    members: dict[str, bytes] = {n: p.read_bytes() for n, p in archive_members().items()}
    requirements = runtime_requirements()
    if project is not None:
        team = Project.at(project)
        clash = sorted(set(team.files()) & set(members))
        if clash:
            raise ConfigError(f"--project {team.root}: files clash with dagrelay's: {clash}")
        members |= {n: p.read_bytes() for n, p in team.files().items()}
        members["dagrelay.yaml"] = team.settings_yaml().encode()
        requirements = merge_requirements(requirements, team.requirements())
    members["requirements.txt"] = ("\n".join(requirements) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members, key=_order):
            archive.writestr(zipfile.ZipInfo(name, EPOCH), members[name])
    return out


def _order(name: str) -> tuple[int, str]:
    """main.py and the package first, as before; then the project's files; requirements last."""
    rank = 0 if name == "main.py" or name.startswith("dagrelay/") else 1
    return (2 if name == "requirements.txt" else rank, name)
