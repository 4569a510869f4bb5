"""A team's project in the function archive (``dagrelay build-function --project DIR``).

A project is a directory with ``handlers/`` (Python packages of handlers), ``pipelines/`` (YAML
and Python pipelines), ``sql/`` (SQL files that ``sql_file`` params name) and a
``requirements.txt`` of pinned requirements. The archive gets those files at its root (those the
rule of ``ops/contents.py`` lets in: no hidden or credential files, nothing from outside the
project), next to ``main.py`` and ``dagrelay/``; a ``dagrelay.yaml`` naming every Python module
of ``handlers/`` and ``pipelines/`` as ``handler_modules`` (the function imports them at start,
which registers the team's handlers and Python steps) and ``sql/`` as ``pipelines_dir``; and one
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
from dagrelay.ops.contents import MODULE_DIRS, PROJECT_DIRS, Selection, module_name, select

OWN_DISTRIBUTION = "dagrelay"  # shipped as the package itself, never installed by pip
# A direct reference the function's build can download; a file: URL names the builder's disk.
REMOTE_URLS = ("https://", "git+https://")


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

    def selection(self) -> Selection:
        """Every file of handlers/, pipelines/ and sql/: in, left out (why) or refused
        (ops/contents.py has the rule)."""
        return select(self.root)

    def files(self) -> dict[str, Path]:
        """{name in the archive: file} of what the rule lets in."""
        return self.selection().files

    def modules(self) -> list[str]:
        """The dotted names of the Python modules of handlers/ and pipelines/ (a package's
        ``__init__`` as the package), which the function imports at start."""
        return self._modules(self.files())

    @staticmethod
    def _modules(files: Iterable[str]) -> list[str]:
        return sorted(
            {module_name(n) for n in files if n.endswith(".py") and n.split("/")[0] in MODULE_DIRS}
        )

    def settings_yaml(self, files: Iterable[str] | None = None) -> str:
        """The archive's dagrelay.yaml: only what the project decides; the deployment's
        environment (Terraform) sets the rest. ``files``: the archive's names, if known."""
        modules = self._modules(files) if files is not None else self.modules()
        settings: dict[str, object] = {"handler_modules": modules}
        if (self.root / "sql").is_dir():
            settings["pipelines_dir"] = "sql"
        header = "# Written by `dagrelay build-function --project`: the project's modules.\n"
        return header + yaml.safe_dump(settings, sort_keys=True)

    def requirements(self) -> list[str]:
        path = self.root / "requirements.txt"
        if path.resolve() != path and not path.resolve().is_relative_to(self.root):
            raise ConfigError(f"{path}: a link to {path.resolve()}, outside the project: refused")
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
        file, line, text = entry.split(":", 2)  # the requirement itself may hold colons (a URL)
        where = f"{file}:{line}"
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"{where}: {text!r} is not a requirement ({_reason(exc)}); {_FORMS}")
            continue
        problems += _merge_one(merged, requirement, where)
    if problems:
        raise ConfigError("; ".join(problems))
    return [str(merged[name]) for name in sorted(merged)]


_FORMS = "write name==version, or name @ https://... for a package the build can download"


def _reason(exc: InvalidRequirement) -> str:
    """packaging's message without its drawing of the line (the first line only)."""
    return str(exc).splitlines()[0].strip() or "not understood"


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
    if theirs.url is not None and not theirs.url.startswith(REMOTE_URLS):
        reason = (
            f"{where}: {theirs.name} points at {theirs.url}, which the function's build "
            f"(Cloud Build) cannot fetch; use a URL starting with {' or '.join(REMOTE_URLS)}, "
            "or publish the package"
        )
        return [reason]
    if theirs.url is None and not [s for s in theirs.specifier if s.operator in ("==", "===")]:
        return [f"{where}: {theirs} is not pinned with == (the archive must be reproducible)"]
    merged[name] = theirs
    return []
