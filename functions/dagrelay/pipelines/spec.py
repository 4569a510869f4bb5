"""Pipeline definition files (``schema/pipelines/*.yaml``): the spec and its loading.

``load_pipeline`` parses a file and checks it against ``schema/pipeline.schema.json``;
``validate`` (``dagrelay.pipelines.validate``) checks the graph and the params,
``apply`` (``dagrelay.pipelines.apply``) writes the rows, ``export`` reads them back.
Every problem is a ``PipelineError`` whose messages start with the file's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import ValidationError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from dagrelay import schemas
from dagrelay.errors import PipelineError
from dagrelay.names import NAME_PATTERN
from dagrelay.pipelines import on_assets as asset_schedules
from dagrelay.pipelines import schedule as schedules
from dagrelay.states import TriggerRule

_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


@dataclass(frozen=True)
class PipelineTask:
    """One task of a file. The defaults mirror the tasks table's column defaults (the migrations
    define them; tests/integration/test_migrations.py proves the two equal)."""

    name: str
    handler: str
    params: Mapping[str, Any] = field(default_factory=dict)
    parents: tuple[str, ...] = ()
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    max_retries: int = 0
    retry_delay_s: int = 30
    retry_backoff: float = 2.0
    retry_max_delay_s: int = 3600
    timeout_s: int = 540
    pool: str | None = None
    enabled: bool = True
    pool_slots: int = 1  # slots of its pool an attempt holds
    priority: int = 0  # higher first among the tasks queued in its pool
    max_active: int | None = None  # attempts of this task at once, across batches
    # Runs once its parents are done whatever their outcome (trigger rule all_done), also when
    # the batch is cancelled: a cancel spares it and waits for it (ARCHITECTURE.md).
    teardown: bool = False
    # The assets its success updates (bq://..., gs://..., any name): each success records an
    # asset event, which may start other pipelines' batches (ARCHITECTURE.md, "Assets").
    updates: tuple[str, ...] = ()
    # Dynamic fan-out: {over: <parent>.<output key>, max_items, max_parallel, tolerated_failures}
    map: Mapping[str, Any] | None = None
    # {within_s, after: scheduled|start, fail}: finished by then, or one alert (and maybe ERROR)
    deadline: Mapping[str, Any] | None = None
    description: str | None = None  # documentation: stored (tasks.description), not run

    def row(self) -> dict[str, Any]:
        """The task's columns, as the task writes of ``dagrelay.pipelines.apply`` read them."""
        row = asdict(self)
        del row["parents"]
        row["params"] = dict(self.params)
        row["trigger_rule"] = self.trigger_rule.value
        row["retry_backoff"] = float(self.retry_backoff)
        row["map"] = dict(self.map) if self.map is not None else None
        row["deadline"] = dict(self.deadline) if self.deadline is not None else None
        row["updates"] = list(self.updates)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any], parents: Sequence[str] = ()) -> PipelineTask:
        """The task a ``tasks`` row defines (``trigger_rule`` as text)."""
        return cls(
            name=row["name"],
            handler=row["handler"],
            params=dict(row["params"] or {}),
            parents=tuple(parents),
            trigger_rule=TriggerRule(row["trigger_rule"]),
            max_retries=row["max_retries"],
            retry_delay_s=row["retry_delay_s"],
            retry_backoff=float(row["retry_backoff"]),
            retry_max_delay_s=row["retry_max_delay_s"],
            timeout_s=row["timeout_s"],
            pool=row["pool"],
            enabled=row["enabled"],
            description=row.get("description"),
            map=row.get("map"),
            pool_slots=row.get("pool_slots", 1),
            priority=row.get("priority", 0),
            max_active=row.get("max_active"),
            teardown=row.get("teardown", False),
            deadline=row.get("deadline"),
            updates=tuple(row.get("updates") or ()),
        )


@dataclass(frozen=True)
class PipelineSpec:
    pipeline: str
    tasks: tuple[PipelineTask, ...]
    description: str | None = None
    source: str = "<pipeline>"  # the file's name, which starts every problem message
    schedule: schedules.ScheduleSpec | None = None
    # The batch's deadline, {within_s, after: scheduled|start} (pipelines.deadline)
    deadline: Mapping[str, Any] | None = None
    on_assets: asset_schedules.OnAssets | None = None  # started when these assets are updated

    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) for every edge of the file."""
        return [(parent, t.name) for t in self.tasks for parent in t.parents]


def load_pipeline(path: str | Path) -> PipelineSpec:
    """The pipeline in a YAML file, checked against the JSON Schema (not yet against the
    handlers or for cycles: see ``validate``)."""
    path = Path(path)
    data = _read_yaml(path)
    found = schema_problems(data) or _not_json(data)
    if found:
        raise PipelineError([f"{path.name}: {p}" for p in found])
    return _spec(data, path.name)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError([f"{path}: cannot read the file: {exc}"]) from exc
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise PipelineError([f"{path.name}: not valid YAML: {_yaml_reason(exc)}"]) from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else _KINDS.get(type(data), type(data).__name__)
        raise PipelineError(
            [f"{path.name}: expected a mapping with 'pipeline' and 'tasks', got {got}"]
        )
    return data


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return str(exc)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _validator() -> Validator:
    return schemas.validator("pipeline.schema.json")


def schema_problems(data: Any) -> list[str]:
    """The most relevant schema error of each task (and of the file's other keys), each as
    ``where: message`` with a task named by its name, e.g. ``task 'load': trigger_rule: 'x' is
    not one of [...]``. A key the schema does not allow is an unknown key, with the allowed key
    it is closest to; the required key it stands for is then not also reported missing."""
    errors = list(_validator().iter_errors(data))
    suggested: dict[tuple[str | int, ...], set[str | None]] = {}
    for error in schemas.misspelt(errors):
        near = {n for _, n in schemas.unknown_keys(error)}
        suggested.setdefault(tuple(error.absolute_path), set()).update(near)
    groups: dict[tuple[str | int, ...], list[ValidationError]] = {}
    for error in errors:
        path = tuple(error.absolute_path)
        if _missing(error) & suggested.get(path, set()):
            continue
        key = path[:2] if path[:1] == ("tasks",) else path[:1]
        groups.setdefault(key, []).append(error)
    return [_describe(e, data) for e in map(best_match, groups.values()) if e is not None]


def _missing(error: ValidationError) -> set[str | None]:
    """The keys a ``required`` error says are missing."""
    if error.validator != "required" or not isinstance(error.instance, dict):
        return set()
    required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
    return {k for k in required if k not in error.instance}


def _where(path: Sequence[str | int], data: Any) -> str:
    """``task 'load'`` (and the path below it) for a task with a name, else the JSON path."""
    if len(path) >= 2 and path[0] == "tasks" and isinstance(path[1], int):
        name = (
            data["tasks"][path[1]].get("name") if isinstance(data["tasks"][path[1]], dict) else None
        )
        if isinstance(name, str) and name:
            below = "/".join(str(p) for p in path[2:])
            return f"task {name!r}" + (f": {below}" if below else "")
    return "/".join(str(p) for p in path) or "(top level)"


def _not_json(data: Mapping[str, Any]) -> list[str]:
    """Params the schema lets through but JSON cannot carry (YAML's .nan and .inf)."""
    found = []
    for index, task in enumerate(data["tasks"]):
        try:
            json.dumps(task.get("params", {}), allow_nan=False)
        except ValueError:
            where = _where(("tasks", index, "params"), data)
            found.append(f"{where}: NaN and Infinity are not JSON values")
    return found


def _describe(error: ValidationError, data: Any) -> str:
    message = schemas.error_message(error)
    if error.validator == "pattern" and error.validator_value == NAME_PATTERN:
        message = (
            f"{error.instance!r} is not a valid name (a letter, then at most 127 letters, "
            "digits, '_', '.' or '-')"
        )
    elif "propertyNames" in error.relative_schema_path:
        message = f"key {error.instance!r} is not a string (quote it in YAML)"
    elif error.validator == "type" and isinstance(error.validator_value, list):
        message = f"{error.instance!r} is not a JSON value (quote dates and times in YAML)"
    return f"{_where(tuple(error.absolute_path), data)}: {message}"


def _spec(data: Mapping[str, Any], source: str) -> PipelineSpec:
    return PipelineSpec(
        pipeline=data["pipeline"],
        tasks=tuple(_task(item) for item in data["tasks"]),
        description=data.get("description"),
        source=source,
        schedule=schedules.from_yaml(data.get("schedule"), source),
        deadline=data.get("deadline"),
        on_assets=asset_schedules.from_yaml(data.get("on_assets"), source),
    )


def _task(item: Mapping[str, Any]) -> PipelineTask:
    fields = dict(item)
    fields["parents"] = tuple(fields.get("parents", ()))
    fields["updates"] = tuple(fields.get("updates", ()))
    default = TriggerRule.ALL_DONE if fields.get("teardown") else TriggerRule.ALL_SUCCESS
    fields["trigger_rule"] = TriggerRule(fields.get("trigger_rule", default))
    return PipelineTask(**fields)
