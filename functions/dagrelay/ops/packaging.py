"""Builds the Cloud Function source archive: ``main.py``, the ``dagrelay`` package with the
run-time files of its schema directory (named SQL, message schemas), the migrations (the deploy
function runs them) and a ``requirements.txt``
pinned exactly as the installed distribution pins its runtime dependencies. Everything is taken
from the installed package (a wheel or an editable checkout, see dagrelay/resources.py), so it
works from any install. One archive serves Terraform and ``gcloud functions deploy --source``."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass, field
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
    "pipeline.schema.json",  # the deploy function loads the pipeline files
    "pipelines/**/*.sql",
    "messages/*.json",
)
# The migrations, for the deploy function (``dagrelay/ops/deploy.py`` migrates to head).
MIGRATION_FILES = ("env.py", "script.py.mako", "versions/*.py")
PACKAGE_SUFFIXES = {".py", ".typed", ".html", ".css", ".js", ".svg", ".json", ".md"}
# Subpackages that never run in a function: the local stack (the `local` extra's emulators).
NOT_DEPLOYED = ("local",)
# Fixed timestamps make the archive byte-for-byte reproducible (Terraform hashes it).
EPOCH = (1980, 1, 1, 0, 0, 0)
CHUNK = 1024 * 1024  # files are copied into the zip this much at a time


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
    migrations = resources.migrations_dir()
    for pattern in MIGRATION_FILES:
        for path in sorted(migrations.glob(pattern)):
            members[f"dagrelay/_migrations/{path.relative_to(migrations).as_posix()}"] = path
    return members


def _is_package_file(path: Path, inside: Path) -> bool:
    skipped = {"__pycache__", *resources.LAYOUT}  # the data directories are chosen above
    return (
        path.is_file()
        and not skipped & set(inside.parts)
        and inside.parts[0] not in NOT_DEPLOYED
        and path.suffix in PACKAGE_SUFFIXES
    )


@dataclass(frozen=True)
class Limits:
    """The sizes an archive may have. Cloud Functions' documented "Max deployment size" is
    "100MB (compressed) for sources. 500MB (uncompressed) for sources plus modules"
    (https://cloud.google.com/functions/quotas, Resource Limits; stated for 1st gen, where the
    deploy API enforces it; 2nd gen builds the same source with Cloud Build and lists no limit of
    its own). We hold every archive to it: what passes deploys as either generation."""

    compressed: int = 100 * 1000 * 1000
    uncompressed: int = 500 * 1000 * 1000


DOCUMENTED_LIMITS = Limits()


class ArchiveRefused(ConfigError):
    """The archive cannot be built as asked; ``problems`` names each file or requirement."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Member:
    """One file of the archive: a file on disk (streamed) or bytes written by the build."""

    name: str
    origin: str  # "dagrelay", "project" or "build-function" (written by the build)
    path: Path | None = None
    data: bytes = b""

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.data)


@dataclass(frozen=True)
class Plan:
    """What an archive would hold (in its order), what of the project was left out and why,
    and why it cannot be built (empty when it can)."""

    members: list[Member]
    left_out: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)


def plan_archive(project: Path | None = None, limits: Limits = DOCUMENTED_LIMITS) -> Plan:
    """The archive's members; with ``project``, the team's files as ops/contents.py decides,
    its dagrelay.yaml and the merged requirements."""
    members = {n: Member(n, "dagrelay", path=p) for n, p in archive_members().items()}
    requirements = runtime_requirements()
    left_out: dict[str, str] = {}
    refused: list[str] = []
    if project is not None:
        team = Project.at(project)
        selection = team.selection()
        left_out, refused = selection.left_out, list(selection.refused)
        clash = sorted(set(selection.files) & set(members))
        if clash:
            refused.append(f"--project {team.root}: files clash with dagrelay's: {clash}")
        members |= {n: Member(n, "project", path=p) for n, p in selection.files.items()}
        settings = team.settings_yaml(selection.files)
        members["dagrelay.yaml"] = Member("dagrelay.yaml", "build-function", data=settings.encode())
        try:
            requirements = merge_requirements(requirements, team.requirements())
        except ConfigError as exc:
            refused += str(exc).split("; ")
    text = "\n".join(requirements) + "\n"
    members["requirements.txt"] = Member("requirements.txt", "build-function", data=text.encode())
    plan = Plan([members[n] for n in sorted(members, key=_order)], left_out, refused)
    if plan.size > limits.uncompressed:
        refused.append(_too_big(plan, limits))
    return plan


def _too_big(plan: Plan, limits: Limits) -> str:
    largest = sorted(plan.members, key=lambda m: m.size, reverse=True)[:3]
    named = ", ".join(f"{m.name} ({_mb(m.size)})" for m in largest)
    return (
        f"the archive's files add up to {_mb(plan.size)}, over the {_mb(limits.uncompressed)} "
        f"Cloud Functions allow uncompressed; the largest: {named}. Keep data in a bucket."
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def build_archive(
    out: Path, project: Path | None = None, limits: Limits = DOCUMENTED_LIMITS
) -> Path:
    """The archive at ``out`` (written to a temporary name and renamed when complete); with
    ``project``, the team's project too. Files are streamed into the zip, never read whole.
    ``ArchiveRefused`` names everything that stops the build."""
    return write_archive(out, plan_archive(project, limits), limits)


def write_archive(out: Path, plan: Plan, limits: Limits = DOCUMENTED_LIMITS) -> Path:
    """Write a ``Plan`` (``ArchiveRefused`` if it has refusals or passes the limit)."""
    if plan.refused:
        raise ArchiveRefused(plan.refused)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        _write(partial, plan, limits)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return out


def _write(path: Path, plan: Plan, limits: Limits) -> None:
    with path.open("wb") as stream, zipfile.ZipFile(stream, "w") as archive:
        for member in plan.members:
            info = zipfile.ZipInfo(member.name, EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16  # the same mode on every machine
            with archive.open(info, "w") as target:
                if member.path is None:
                    target.write(member.data)
                else:
                    with member.path.open("rb") as source:
                        shutil.copyfileobj(source, target, CHUNK)
            if stream.tell() > limits.compressed:
                reason = (
                    f"the archive passes {_mb(limits.compressed)} compressed (Cloud "
                    f"Functions' limit for sources) at {member.name} ({_mb(member.size)} "
                    "uncompressed); keep data in a bucket"
                )
                raise ArchiveRefused([reason])


def _order(name: str) -> tuple[int, str]:
    """main.py and the package first, as before; then the project's files; requirements last."""
    rank = 0 if name == "main.py" or name.startswith("dagrelay/") else 1
    return (2 if name == "requirements.txt" else rank, name)
