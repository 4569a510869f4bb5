"""Ingestion sources (``schema/sources.yaml``): what a file under ``inbox/<source>/`` must hold,
where it is loaded, how its month is read, and which pipeline batch it may start.

Loading checks the file against ``schema/sources.schema.json`` and then the rules a JSON Schema
cannot say (regex groups, column references, trigger requirements)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from dagrelay import schemas
from dagrelay.errors import ConfigError
from dagrelay.resources import schema_dir

ColumnType = Literal["string", "integer", "float", "date", "timestamp", "boolean"]
FileFormat = Literal["csv", "ndjson", "json"]
# What a file whose name was already loaded with other content does (see README, ingestion):
# refuse: REJECTED with the reason; append: loaded as new data beside the earlier one.
OnReplace = Literal["refuse", "append"]
INBOX_PREFIX = "inbox/"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False


@dataclass(frozen=True)
class MonthFrom:
    """Exactly one is set: a regex searched in the file's base name (groups ``year``, ``month``),
    or a date/timestamp column whose values all fall in one month."""

    file_name: re.Pattern[str] | None = None
    column: str | None = None


@dataclass(frozen=True)
class Trigger:
    pipeline: str
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    name: str
    format: FileFormat
    target_table: str
    columns: tuple[Column, ...]
    month_from: MonthFrom | None = None
    triggers: tuple[Trigger, ...] = ()
    on_replace: OnReplace = "refuse"
    asset: str = ""  # the asset its files update (ARCHITECTURE.md, "Assets")

    def __post_init__(self) -> None:
        if not self.asset:
            object.__setattr__(self, "asset", f"bq://{self.target_table}")

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


Sources = Mapping[str, Source]


@dataclass(frozen=True)
class Match:
    source: Source
    file_name: str  # the path below inbox/<source>/


def match_object(name: str, sources: Sources, prefix: str = INBOX_PREFIX) -> Match | None:
    """The source of an object named ``inbox/<source>/<file>``; None for anything else (our own
    staging/, archive/, rejected/ writes, folders, unknown sources)."""
    if not name.startswith(prefix):
        return None
    source_name, sep, rest = name[len(prefix) :].partition("/")
    if not sep or not rest or rest.endswith("/") or source_name not in sources:
        return None
    return Match(sources[source_name], rest)


def unsafe_name(name: str) -> str | None:
    """Why an object name under the inbox cannot be ingested safely (a ``.``/``..`` or empty
    path segment, a control character), or None. Such a name would address another object
    once a client or server normalises it, and is never read."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "object name contains a control character"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "object name has an empty, '.' or '..' path segment"
    return None


def load_sources(path: Path | None = None) -> dict[str, Source]:
    """Sources from a YAML file (default ``schema/sources.yaml``); ConfigError naming the
    problem when the file is invalid."""
    path = path or schema_dir() / "sources.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read sources: {exc}") from exc
    return parse_sources(data, origin=str(path))


def parse_sources(data: Any, origin: str = "sources") -> dict[str, Source]:
    problem = schemas.problem(schemas.validator("sources.schema.json"), data, "(top)")
    if problem is not None:
        raise ConfigError(f"{origin}: {problem}")
    sources = {name: _source(name, raw) for name, raw in data["sources"].items()}
    problems = [p for s in sources.values() for p in _problems(s, sources)]
    if problems:
        raise ConfigError(f"{origin}: " + "; ".join(problems))
    return sources


def _source(name: str, raw: Mapping[str, Any]) -> Source:
    columns = tuple(
        Column(c["name"], cast(ColumnType, c["type"]), bool(c.get("required", False)))
        for c in raw["columns"]
    )
    return Source(
        name=name,
        format=cast(FileFormat, raw["format"]),
        target_table=raw["target_table"],
        columns=columns,
        month_from=_month_from(name, raw.get("month_from")),
        triggers=tuple(
            Trigger(t["pipeline"], tuple(t.get("requires", []))) for t in raw.get("triggers", [])
        ),
        on_replace=cast(OnReplace, raw.get("on_replace", "refuse")),
        asset=raw.get("asset", ""),
    )


def _month_from(source: str, raw: Mapping[str, str] | None) -> MonthFrom | None:
    if raw is None:
        return None
    if "column" in raw:
        return MonthFrom(column=raw["column"])
    try:
        pattern = re.compile(raw["file_name"])
    except re.error as exc:
        raise ConfigError(f"source {source}: month_from.file_name is not a regex: {exc}") from exc
    return MonthFrom(file_name=pattern)


def _problems(source: Source, sources: Sources) -> list[str]:
    problems: list[str] = []
    names = [c.name for c in source.columns]
    if len(set(names)) != len(names):
        problems.append(f"source {source.name}: a column is declared twice")
    month = source.month_from
    pattern = month.file_name if month is not None else None
    if pattern is not None and not {"year", "month"} <= set(pattern.groupindex):
        problems.append(
            f"source {source.name}: month_from.file_name needs groups (?P<year>), (?P<month>)"
        )
    if month is not None and month.column is not None:
        column = source.column(month.column)
        if column is None or column.type not in ("date", "timestamp"):
            problems.append(
                f"source {source.name}: month_from.column {month.column!r} must be a declared"
                " date or timestamp column"
            )
    for trigger in source.triggers:
        problems += _trigger_problems(source, trigger, sources)
    return problems


def _trigger_problems(source: Source, trigger: Trigger, sources: Sources) -> list[str]:
    # file_log keeps no period column: the month of another source's loaded files is read back
    # from their names, so every source a trigger waits on names its month in the file name.
    problems: list[str] = []
    for name in (source.name, *trigger.requires):
        other = sources.get(name)
        if other is None:
            problems.append(f"source {source.name}: trigger requires unknown source {name!r}")
        elif other.month_from is None or other.month_from.file_name is None:
            problems.append(
                f"source {source.name}: trigger {trigger.pipeline} needs source {name} to take"
                " its month from the file name (month_from.file_name)"
            )
    return problems
