"""From rows back to a file: ``read_pipeline`` builds the spec the rows in ``tasks`` and
``task_dependencies`` define, ``export_yaml`` writes the pipeline file that applies to them."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import MISSING, fields, replace
from typing import Any

import yaml
from sqlalchemy import Connection

from dagrelay.errors import PipelineError
from dagrelay.pipelines import on_assets as asset_schedules
from dagrelay.pipelines import schedule as schedules
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask
from dagrelay.states import TriggerRule
from dagrelay.store.queries import query


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
    tasks = tuple(PipelineTask.from_row(dict(r), sorted(parents.get(r["name"], []))) for r in rows)
    schedule = schedules.read(conn, pipeline)
    described = conn.execute(query("pipeline_description"), {"pipeline": pipeline}).first()
    spec = PipelineSpec(
        pipeline,
        tasks,
        description=described.description if described else None,
        source=f"database:{pipeline}",
        schedule=schedule,
        deadline=described.deadline if described else None,
        on_assets=asset_schedules.read(conn, pipeline),
    )
    return topological_order(spec)


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
    description, handler, parents and params first, then only the fields that differ from their
    defaults. Exporting what applying this text wrote gives this text again, byte for byte."""
    ordered = topological_order(spec)
    document: dict[str, Any] = {"pipeline": spec.pipeline}
    if spec.description is not None:
        document["description"] = spec.description
    if spec.schedule is not None:
        document["schedule"] = schedules.to_yaml(spec.schedule)
    if spec.deadline is not None:
        document["deadline"] = _deadline(spec.deadline)
    if spec.on_assets is not None:
        document["on_assets"] = asset_schedules.to_yaml(spec.on_assets)
    document["tasks"] = [_task_document(t) for t in ordered.tasks]
    return yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )


def _task_document(task: PipelineTask) -> dict[str, Any]:
    document: dict[str, Any] = {"name": task.name}
    if task.description is not None:
        document["description"] = task.description
    document["handler"] = task.handler
    if task.parents:
        document["parents"] = list(task.parents)
    if task.params:
        document["params"] = _sorted_keys(task.params)
    for spec_field in fields(PipelineTask):
        if spec_field.name in ("name", "handler", "parents", "params", "description"):
            continue
        value = getattr(task, spec_field.name)
        if spec_field.name == "trigger_rule" and task.teardown and value == TriggerRule.ALL_DONE:
            continue  # a teardown's own rule: loading the file gives it back
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
    if name == "deadline" and value is not None:
        return _deadline(value)
    if isinstance(value, tuple):
        return list(value)
    return value


DEADLINE_KEYS = ("within_s", "after", "fail")


def _deadline(value: Mapping[str, Any]) -> dict[str, Any]:
    """A deadline's keys in the order one reads them (``jsonb`` keeps its own order)."""
    return {key: value[key] for key in DEADLINE_KEYS if key in value}


def _sorted_keys(value: Any) -> Any:
    """JSON with every object's keys sorted (a stable text, whatever order they came in)."""
    if isinstance(value, Mapping):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value
