"""Builds the Cloud Function source archive: ``main.py``, the ``dagrelay`` package, the run-time
files of ``schema/`` (named SQL, message schemas) and a ``requirements.txt`` pinned exactly as
pyproject.toml pins the runtime dependencies. One archive serves Terraform and
``gcloud functions deploy --source``."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

from dagrelay.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
SCHEMA_FILES = (
    "*.sql",
    "sql/*.sql",
    "openapi.json",
    "sources.yaml",
    "sources.schema.json",
    "pipelines/**/*.sql",
    "messages/*.json",
)
PACKAGE_SUFFIXES = {".py", ".typed", ".html", ".css", ".js", ".svg", ".json"}
# Fixed timestamps make the archive byte-for-byte reproducible (Terraform hashes it).
EPOCH = (1980, 1, 1, 0, 0, 0)


def runtime_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    requirements = list(data["project"]["dependencies"])
    unpinned = [r for r in requirements if "==" not in r]
    if unpinned:
        raise ConfigError(f"runtime dependencies must be pinned with ==: {unpinned}")
    return sorted(requirements, key=str.lower)


def archive_members(repo: Path = REPO) -> dict[str, Path]:
    """{name in the archive: file on disk}."""
    members = {"main.py": repo / "functions" / "main.py"}
    package = repo / "functions" / "dagrelay"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in PACKAGE_SUFFIXES:
            members[f"dagrelay/{path.relative_to(package).as_posix()}"] = path
    for pattern in SCHEMA_FILES:
        for path in sorted((repo / "schema").glob(pattern)):
            members[f"schema/{path.relative_to(repo / 'schema').as_posix()}"] = path
    return members


def build_archive(out: Path, repo: Path = REPO) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    requirements = "\n".join(runtime_requirements(repo / "pyproject.toml")) + "\n"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in archive_members(repo).items():
            archive.writestr(zipfile.ZipInfo(name, EPOCH), path.read_bytes())
        archive.writestr(zipfile.ZipInfo("requirements.txt", EPOCH), requirements)
    return out
