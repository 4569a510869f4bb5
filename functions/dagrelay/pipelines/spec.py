"""Pipeline definition files (``schema/pipelines/*.yaml``): load, validate, apply.

``load_pipeline`` parses a file and checks it against ``schema/pipeline.schema.json``;
``validate`` checks the graph (``dagrelay.engine.dag``) and each task's params against its handler;
``apply`` writes the rows a user would write by hand into ``tasks`` and ``task_dependencies``,
in the caller's transaction, changing nothing when the database already matches the file;
``read_pipeline`` and ``export_yaml`` go back: rows -> spec -> the file that applies to them.
Every problem is a ``PipelineError`` whose messages start with the file's name.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema import ValidationError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dagrelay import schemas
from dagrelay.engine import params as params_mod
from dagrelay.engine.dag import TaskSpec, validate_dag
from dagrelay.errors import NonRetryableError, PipelineError
from dagrelay.handlers.registry import HandlerRegistry, Registration, default_registry
from dagrelay.names import NAME_PATTERN
from dagrelay.pipelines import schedule as schedules
from dagrelay.states import TriggerRule
from dagrelay.store.db import database_error
from dagrelay.store.queries import query

_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


@dataclass(frozen=True)
class PipelineTask:
    """One task of a file; the defaults are the database's column defaults."""

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
    description: str | None = None  # documentation only; not stored

    def row(self) -> dict[str, Any]:
        """The task's columns, as ``upsert_pipeline_tasks`` reads them."""
        row = asdict(self)
        del row["parents"], row["description"]
        row["params"] = dict(self.params)
        row["trigger_rule"] = self.trigger_rule.value
        row["retry_backoff"] = float(self.retry_backoff)
        return row


@dataclass(frozen=True)
class PipelineSpec:
    pipeline: str
    tasks: tuple[PipelineTask, ...]
    description: str | None = None
    source: str = "<pipeline>"  # the file's name, which starts every problem message
    schedule: schedules.ScheduleSpec | None = None

    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) for every edge of the file."""
        return [(parent, t.name) for t in self.tasks for parent in t.parents]


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` changed. Edges are (parent, child)."""

    pipeline: str
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    edges_added: tuple[tuple[str, str], ...] = ()
    edges_removed: tuple[tuple[str, str], ...] = ()
    not_in_file: tuple[str, ...] = ()  # this pipeline's tasks the file does not list
    pruned: tuple[str, ...] = ()  # of those, the ones deleted (prune=True)
    schedule: str = "none"  # what happened to the schedule (dagrelay.pipelines.schedule)

    @property
    def changes(self) -> int:
        return sum(
            map(
                len, (self.created, self.updated, self.edges_added, self.edges_removed, self.pruned)
            )
        ) + (self.schedule in ("created", "updated", "deleted"))

    def __str__(self) -> str:
        text = (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged; "
            f"{len(self.edges_added)} edges added, {len(self.edges_removed)} removed"
        )
        kept = [name for name in self.not_in_file if name not in self.pruned]
        if self.pruned:
            text += f"; pruned: {', '.join(self.pruned)}"
        if kept:
            text += (
                f"; live tasks not in the file (they still run; --prune removes them): "
                f"{', '.join(kept)}"
            )
        return text + ("" if self.schedule == "none" else f"; schedule {self.schedule}")


# -- load ----------------------------------------------------------------------------------------


def load_pipeline(path: str | Path) -> PipelineSpec:
    """The pipeline in a YAML file, checked against the JSON Schema (not yet against the
    handlers or for cycles: see ``validate``)."""
    path = Path(path)
    data = _read_yaml(path)
    found = schema_problems(data) or _not_json(data["tasks"])
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
    ``path: message``, e.g. ``tasks/2/trigger_rule: 'x' is not one of [...]``."""
    groups: dict[tuple[str | int, ...], list[ValidationError]] = {}
    for error in _validator().iter_errors(data):
        path = tuple(error.absolute_path)
        key = path[:2] if path[:1] == ("tasks",) else path[:1]
        groups.setdefault(key, []).append(error)
    return [_describe(e) for e in map(best_match, groups.values()) if e is not None]


def _not_json(tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Params the schema lets through but JSON cannot carry (YAML's .nan and .inf)."""
    found = []
    for index, task in enumerate(tasks):
        try:
            json.dumps(task.get("params", {}), allow_nan=False)
        except ValueError:
            found.append(f"tasks/{index}/params: NaN and Infinity are not JSON values")
    return found


def _describe(error: ValidationError) -> str:
    message = error.message
    if error.validator == "pattern" and error.validator_value == NAME_PATTERN:
        message = (
            f"{error.instance!r} is not a valid name (a letter, then at most 127 letters, "
            "digits, '_', '.' or '-')"
        )
    elif "propertyNames" in error.relative_schema_path:
        message = f"key {error.instance!r} is not a string (quote it in YAML)"
    elif error.validator == "type" and isinstance(error.validator_value, list):
        message = f"{error.instance!r} is not a JSON value (quote dates and times in YAML)"
    return schemas.describe(error, message=message)


def _spec(data: Mapping[str, Any], source: str) -> PipelineSpec:
    return PipelineSpec(
        pipeline=data["pipeline"],
        tasks=tuple(_task(item) for item in data["tasks"]),
        description=data.get("description"),
        source=source,
        schedule=schedules.from_yaml(data.get("schedule"), source),
    )


def _task(item: Mapping[str, Any]) -> PipelineTask:
    fields = dict(item)
    fields["parents"] = tuple(fields.get("parents", ()))
    fields["trigger_rule"] = TriggerRule(fields.get("trigger_rule", TriggerRule.ALL_SUCCESS))
    return PipelineTask(**fields)


# -- validate ------------------------------------------------------------------------------------


def registered_handlers(registry: HandlerRegistry = default_registry) -> dict[str, Registration]:
    """{name: registration} of every handler (built-ins, configured modules, entry points)."""
    return {name: registry.get(name) for name in registry.names()}


def problems(
    spec: PipelineSpec, known_handlers: Mapping[str, Registration] | Iterable[str]
) -> list[str]:
    """Every problem with the pipeline: the graph (cycles, self-edges, unknown parents and
    handlers, duplicates), retry settings, and each task's params against its handler's
    ``params_schema`` (skipped for params with ``{placeholders}``, known only per batch)."""
    handlers = known_handlers if isinstance(known_handlers, Mapping) else {}
    found = validate_dag(_dag_tasks(spec), known_handlers)
    found += _retry_problems(spec) + _params_problems(spec, handlers)
    return [f"{spec.source}: {p}" for p in found]


def validate(
    spec: PipelineSpec, known_handlers: Mapping[str, Registration] | Iterable[str]
) -> None:
    """``PipelineError`` with all of ``problems(...)``, if any."""
    found = problems(spec, known_handlers)
    if found:
        raise PipelineError(found)


def _dag_tasks(spec: PipelineSpec) -> list[TaskSpec]:
    return [TaskSpec(t.name, t.handler, t.parents, t.params) for t in spec.tasks]


def _retry_problems(spec: PipelineSpec) -> list[str]:
    found = [
        f"task {t.name!r}: retry_backoff must be a finite number"
        for t in spec.tasks
        if not math.isfinite(t.retry_backoff)
    ]
    return found + [
        f"task {t.name!r}: retry_max_delay_s ({t.retry_max_delay_s}) is less than "
        f"retry_delay_s ({t.retry_delay_s})"
        for t in spec.tasks
        if t.retry_max_delay_s < t.retry_delay_s
    ]


def _params_problems(spec: PipelineSpec, handlers: Mapping[str, Registration]) -> list[str]:
    found: list[str] = []
    for task in spec.tasks:
        registration = handlers.get(task.handler)
        if registration is None:
            continue
        try:
            resolved = params_mod.resolve(task.params, {})
        except NonRetryableError:
            continue  # has {placeholders}: checked when a batch resolves them
        try:
            registration.check_params(resolved, task.name)
        except NonRetryableError as exc:
            found.append(str(exc))
    return found


# -- apply ---------------------------------------------------------------------------------------


def apply(
    conn: Connection, spec: PipelineSpec, *, prune: bool = False, now: datetime | None = None
) -> ApplyResult:
    """Write the pipeline into ``tasks`` and ``task_dependencies`` on ``conn``, inside the
    caller's transaction (nothing is committed here). Tasks are upserted by name, the file's
    tasks get exactly the file's parents, and this pipeline's tasks missing from the file are
    reported, or deleted when ``prune`` (batches that ran them keep them in their version; the
    next batch no longer has them). Applying the same file again changes nothing."""
    structural = validate_dag(_dag_tasks(spec), {t.handler for t in spec.tasks})
    structural += _retry_problems(spec)
    if structural:
        raise PipelineError([f"{spec.source}: {p}" for p in structural])
    try:
        return _apply(conn, spec, prune, now or datetime.now(UTC))
    except DBAPIError as exc:
        refusal = _refusal(exc, spec)
        if refusal is None:
            raise
        raise refusal from exc


def _apply(conn: Connection, spec: PipelineSpec, prune: bool, now: datetime) -> ApplyResult:
    names = [t.name for t in spec.tasks]
    conn.execute(query("lock_pipeline_apply"), {"pipeline": spec.pipeline})
    rows = conn.execute(query("lock_pipeline_tasks"), {"pipeline": spec.pipeline})
    owners = {row.name for row in rows}
    stale = sorted(owners - set(names))
    written = _upsert_tasks(conn, spec, now)
    new = [n for n in names if n not in owners]
    removed, added = _sync_edges(conn, spec, now)
    pruned = _delete_tasks(conn, spec, stale) if prune and stale else []
    return ApplyResult(
        pipeline=spec.pipeline,
        created=tuple(new),
        updated=tuple(n for n in names if n in written and n in owners),
        unchanged=tuple(n for n in names if n not in written),
        edges_added=tuple(added),
        edges_removed=tuple(removed),
        not_in_file=tuple(stale),
        pruned=tuple(pruned),
        schedule=schedules.apply(conn, spec.pipeline, spec.schedule, prune, now),
    )


def _upsert_tasks(conn: Connection, spec: PipelineSpec, now: datetime) -> set[str]:
    params = {
        "pipeline": spec.pipeline,
        "tasks": json.dumps([t.row() for t in spec.tasks]),
        "now": now,
    }
    return set(conn.execute(query("upsert_pipeline_tasks"), params).scalars())


def _sync_edges(
    conn: Connection, spec: PipelineSpec, now: datetime
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Remove the file's tasks' edges the file no longer lists, then add the missing ones
    (in that order, so that reversing an edge is not a momentary cycle)."""
    edges = spec.edges()
    params = {
        "pipeline": spec.pipeline,
        "names": [t.name for t in spec.tasks],
        "parents": [parent for parent, _ in edges],
        "children": [child for _, child in edges],
        "now": now,
    }
    removed = conn.execute(query("delete_stale_edges"), params).all()
    added = conn.execute(query("insert_missing_edges"), params).all()
    return sorted((r.parent, r.child) for r in removed), [(r.parent, r.child) for r in added]


def _delete_tasks(conn: Connection, spec: PipelineSpec, names: Sequence[str]) -> list[str]:
    params = {"pipeline": spec.pipeline, "names": list(names)}
    return sorted(conn.execute(query("delete_pipeline_tasks"), params).scalars())


def _refusal(exc: DBAPIError, spec: PipelineSpec) -> PipelineError | None:
    """The database's own refusal (an integrity violation: the dependency guard's cycle,
    self-edge or cross-pipeline edge, a CHECK, a foreign key) as a PipelineError; else None."""
    code, message = database_error(exc)
    if code is None or not code.startswith("23"):
        return None
    return PipelineError([f"{spec.source}: the database refused the pipeline: {message}"])


# -- export --------------------------------------------------------------------------------------


def read_pipeline(conn: Connection, pipeline: str) -> PipelineSpec:
    """The pipeline as its rows in ``tasks`` and ``task_dependencies`` define it (tasks in
    ``topological_order``, parents by name). ``PipelineError`` if it has no tasks."""
    rows = conn.execute(query("export_pipeline_tasks"), {"pipeline": pipeline}).mappings().all()
    if not rows:
        raise PipelineError([f"no pipeline {pipeline!r} in the database (it has no tasks)"])
    edges = conn.execute(query("export_pipeline_edges"), {"pipeline": pipeline}).all()
    parents: dict[str, list[str]] = {}
    for edge in edges:
        parents.setdefault(edge.child, []).append(edge.parent)
    tasks = tuple(_task_from_row(dict(r), sorted(parents.get(r["name"], []))) for r in rows)
    schedule = schedules.read(conn, pipeline)
    spec = PipelineSpec(pipeline, tasks, source=f"database:{pipeline}", schedule=schedule)
    return topological_order(spec)


def _task_from_row(row: Mapping[str, Any], parents: Sequence[str]) -> PipelineTask:
    return PipelineTask(
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
    )


def topological_order(spec: PipelineSpec) -> PipelineSpec:
    """The same pipeline with its tasks parents-first, ties broken by name (the smallest ready
    name comes next), and each task's parents sorted; tasks on a cycle come last, by name."""
    by_name = {t.name: t for t in spec.tasks}
    waiting = {t.name: len(set(t.parents) & by_name.keys()) for t in spec.tasks}
    children: dict[str, list[str]] = {}
    for parent, child in spec.edges():
        children.setdefault(parent, []).append(child)
    ready = [name for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for child in children.get(name, []):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    order += sorted(set(by_name) - set(order))
    tasks = tuple(
        replace(by_name[name], parents=tuple(sorted(by_name[name].parents))) for name in order
    )
    return replace(spec, tasks=tasks)


def export_yaml(spec: PipelineSpec) -> str:
    """The pipeline file for ``spec``: tasks in ``topological_order``, each with its name,
    handler, parents and params first, then only the fields that differ from their defaults
    (descriptions are not stored, so not written). Exporting what applying this text wrote
    gives this text again, byte for byte."""
    ordered = topological_order(spec)
    document: dict[str, Any] = {"pipeline": spec.pipeline}
    if spec.schedule is not None:
        document["schedule"] = schedules.to_yaml(spec.schedule)
    document["tasks"] = [_task_document(t) for t in ordered.tasks]
    return yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )


def _task_document(task: PipelineTask) -> dict[str, Any]:
    document: dict[str, Any] = {"name": task.name, "handler": task.handler}
    if task.parents:
        document["parents"] = list(task.parents)
    if task.params:
        document["params"] = _sorted_keys(task.params)
    for spec_field in fields(PipelineTask):
        if spec_field.name in ("name", "handler", "parents", "params", "description"):
            continue
        value = getattr(task, spec_field.name)
        if spec_field.default is MISSING or value != spec_field.default:
            document[spec_field.name] = _plain(spec_field.name, value)
    return document


def _plain(name: str, value: Any) -> Any:
    """A field's value as YAML writes it: rules by name, the backoff always as a float (the
    column is double precision: 3 reads back as 3.0)."""
    if isinstance(value, TriggerRule):
        return value.value
    if name == "retry_backoff":
        return float(value)
    return value


def _sorted_keys(value: Any) -> Any:
    """JSON with every object's keys sorted (a stable text, whatever order they came in)."""
    if isinstance(value, Mapping):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value
