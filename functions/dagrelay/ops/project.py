"""A team's project in the function archive (``dagrelay build-function --project DIR``).

A project is a directory with ``handlers/`` (Python packages of handlers), ``pipelines/`` (YAML
and Python pipelines), ``sql/`` (SQL files that ``sql_file`` params name) and a
``requirements.txt`` of pinned requirements. The archive gets those files at its root, next to
``main.py`` and ``dagrelay/``; a ``dagrelay.yaml`` naming every Python module of ``handlers/``
and ``pipelines/`` as ``handler_modules`` (the function imports them at start, which registers
the team's handlers and Python steps) and ``sql/`` as ``pipelines_dir``; and one
``requirements.txt``: dagrelay's pins merged with the team's, refusing a conflict by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from dagrelay.errors import ConfigError

PROJECT_DIRS = ("handlers", "pipelines", "sql")
PROJECT_SUFFIXES = {".py", ".yaml", ".yml", ".sql", ".json"}
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", "tests"}
OWN_DISTRIBUTION = "dagrelay"  # shipped as the package itself, never installed by pip


@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def at(cls, root: Path) -> Project:
        root = root.resolve()
        if not root.is_dir():
            raise ConfigError(f"--project {root}: not a directory")
        if not any((root / d).is_dir() for d in PROJECT_DIRS):
            raise ConfigError(
                f"--project {root}: no {', '.join(d + '/' for d in PROJECT_DIRS)} in it "
                "(`dagrelay init DIR` makes a project)"
            )
        return cls(root)

    def files(self) -> dict[str, Path]:
        """{name in the archive: file} of handlers/, pipelines/ and sql/."""
        found: dict[str, Path] = {}
        for folder in PROJECT_DIRS:
            for path in sorted((self.root / folder).rglob("*")):
                inside = path.relative_to(self.root)
                wanted = path.is_file() and path.suffix in PROJECT_SUFFIXES
                if wanted and not SKIPPED_PARTS & set(inside.parts):
                    found[inside.as_posix()] = path
        return found

    def modules(self) -> list[str]:
        """The dotted names of the Python modules of handlers/ and pipelines/ (not packages'
        ``__init__``), which the function imports at start."""
        names = []
        for name in self.files():
            if name.endswith(".py") and not name.startswith("sql/"):
                dotted = name.removesuffix(".py").replace("/", ".")
                names.append(dotted.removesuffix(".__init__"))
        return sorted(set(names))

    def settings_yaml(self) -> str:
        """The archive's dagrelay.yaml: only what the project decides; the deployment's
        environment (Terraform) sets the rest."""
        settings: dict[str, object] = {"handler_modules": self.modules()}
        if (self.root / "sql").is_dir():
            settings["pipelines_dir"] = "sql"
        header = "# Written by `dagrelay build-function --project`: the project's modules.\n"
        return header + yaml.safe_dump(settings, sort_keys=True)

    def requirements(self) -> list[str]:
        path = self.root / "requirements.txt"
        if not path.is_file():
            return []
        return _requirement_lines(path)


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise ConfigError(
                f"{path.name}:{number}: pip options ({line.split()[0]}) cannot be merged; "
                "list pinned requirements only"
            )
        lines.append(f"{path.name}:{number}:{line}")
    return lines


def merge_requirements(ours: Iterable[str], theirs: Iterable[str]) -> list[str]:
    """dagrelay's pins plus the team's (``file:line:requirement``), sorted by name. The team's
    must be pinned with ``==``; a package in both must admit dagrelay's pin, else the conflict
    is a ``ConfigError`` naming both. ``dagrelay`` itself is skipped (the archive holds it)."""
    merged: dict[str, Requirement] = {canonicalize_name(r.name): r for r in map(Requirement, ours)}
    problems = []
    for entry in theirs:
        where, _, text = entry.rpartition(":")
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"{where}: {text!r} is not a requirement: {exc}")
            continue
        problems += _merge_one(merged, requirement, where)
    if problems:
        raise ConfigError("; ".join(problems))
    return [str(merged[name]) for name in sorted(merged)]


def _merge_one(merged: dict[str, Requirement], theirs: Requirement, where: str) -> list[str]:
    name = canonicalize_name(theirs.name)
    if name == OWN_DISTRIBUTION:
        return []
    ours = merged.get(name)
    if ours is not None:
        (pin,) = [s.version for s in ours.specifier]
        if not theirs.specifier.contains(pin, prereleases=True):
            return [f"{where}: {theirs} conflicts with dagrelay's {ours}"]
        ours.extras |= theirs.extras
        return []
    if theirs.url is None and not [s for s in theirs.specifier if s.operator in ("==", "===")]:
        return [f"{where}: {theirs} is not pinned with == (the archive must be reproducible)"]
    merged[name] = theirs
    return []
