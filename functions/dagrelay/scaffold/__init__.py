"""``dagrelay init DIR``: a team's project, written from the templates in ``template/``
(package data, so it works from an installed wheel). Each ``X.tmpl`` becomes ``X`` with the
project's name filled in; ``gitignore.tmpl`` becomes ``.gitignore``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.abc import Traversable
from pathlib import Path

from dagrelay.errors import ConfigError

SUFFIX = ".tmpl"
RENAMED = {"gitignore": ".gitignore"}
GIT_MODULE = "git::https://github.com/dagrelay/dagrelay.git//terraform?ref=v{version}"


@dataclass(frozen=True)
class Written:
    root: Path
    project: str
    files: tuple[str, ...]


def project_name(directory: Path) -> str:
    """The directory's name as a handler and pipeline prefix: lower case, ``[a-z][a-z0-9_]*``."""
    name = re.sub(r"[^a-z0-9_]+", "_", directory.resolve().name.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"p_{name}" if name else "project"
    return name[:40]


def write_project(
    directory: Path, *, terraform_source: str | None = None, force: bool = False
) -> Written:
    """Write the project into ``directory`` (new, or empty unless ``force``)."""
    if directory.exists() and any(directory.iterdir()) and not force:
        raise ConfigError(f"{directory} is not empty (use --force to write into it anyway)")
    project = project_name(directory)
    version = metadata.version("dagrelay")
    values = {
        "__PROJECT__": project,
        "__PREFIX__": project.replace("_", "-")[:12],
        "__VERSION__": version,
        "__MODULE_SOURCE__": terraform_source or GIT_MODULE.format(version=version),
        "__PYDANTIC__": metadata.version("pydantic"),
    }
    written = []
    for relative, template in _templates(resources.files(__name__) / "template", ""):
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = template.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        target.write_text(text, encoding="utf-8")
        written.append(relative)
    return Written(directory, project, tuple(sorted(written)))


def _templates(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _templates(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(SUFFIX):
            name = entry.name.removesuffix(SUFFIX)
            found.append((f"{prefix}{RENAMED.get(name, name)}", entry))
    return found
