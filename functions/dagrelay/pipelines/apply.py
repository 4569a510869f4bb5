"""Apply a pipeline file: write the rows a user would write by hand into ``tasks`` and
``task_dependencies``, in the caller's transaction, at the cost of what changed.

The pipeline's current rows are read once (no row locks), compared with the file in Python
(``plan``), and only the differences are written, each kind in one set-based statement. An
unchanged file writes nothing and takes no lock a running batch could wait on; the dependency
guard's per-pipeline lock is taken only when edges are added.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dagrelay.engine.dag import validate_dag
from dagrelay.errors import PipelineError
from dagrelay.pipelines import on_assets as asset_schedules
from dagrelay.pipelines import schedule as schedules
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask
from dagrelay.pipelines.validate import call_problems, dag_tasks, retry_problems
from dagrelay.store.db import database_error
from dagrelay.store.queries import query

Edge = tuple[str, str]  # (parent, child)


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` changed. Edges are (parent, child)."""

    pipeline: str
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    edges_added: tuple[Edge, ...] = ()
    edges_removed: tuple[Edge, ...] = ()
    not_in_file: tuple[str, ...] = ()  # this pipeline's tasks the file does not list
    pruned: tuple[str, ...] = ()  # of those, the ones deleted (prune=True)
    schedule: str = "none"  # what happened to the schedule (dagrelay.pipelines.schedule)
    on_assets: str = "none"  # what happened to the asset schedule (pipelines.on_assets)

    @property
    def changes(self) -> int:
        return (
            sum(
                map(
                    len,
                    (self.created, self.updated, self.edges_added, self.edges_removed, self.pruned),
                )
            )
            + (self.schedule in ("created", "updated", "deleted"))
            + (self.on_assets in ("created", "updated", "deleted"))
        )

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
        text += "" if self.schedule == "none" else f"; schedule {self.schedule}"
        return text + ("" if self.on_assets == "none" else f"; on_assets {self.on_assets}")


@dataclass(frozen=True)
class Plan:
    """The differences between a file and the database's rows."""

    create: tuple[PipelineTask, ...]
    update: tuple[PipelineTask, ...]
    stale: tuple[str, ...]  # this pipeline's tasks the file does not list
    remove_edges: tuple[Edge, ...]
    add_edges: tuple[Edge, ...]


def plan(spec: PipelineSpec, rows: Iterable[Mapping[str, Any]], edges: Iterable[Edge]) -> Plan:
    """Compare the file with ``rows`` (this pipeline's tasks; names are unique per pipeline)
    and ``edges`` (this pipeline's). The file's parent lists are authoritative for the file's
    tasks; other tasks' edges are left alone."""
    mine = {row["name"]: row for row in rows if row["pipeline"] == spec.pipeline}
    names = {t.name for t in spec.tasks}
    wanted = set(spec.edges())
    existing = {(p, c) for p, c in edges if c in names}
    return Plan(
        create=tuple(t for t in spec.tasks if t.name not in mine),
        update=tuple(t for t in spec.tasks if t.name in mine and _differs(t, mine[t.name])),
        stale=tuple(sorted(set(mine) - names)),
        remove_edges=tuple(sorted(existing - wanted)),
        add_edges=tuple(sorted(wanted - existing)),
    )


def _differs(task: PipelineTask, row: Mapping[str, Any]) -> bool:
    """Whether the row's columns differ from the file's (params compared as JSON text, so that
    ``true`` and ``1`` differ as they do in jsonb)."""
    ours, theirs = task.row(), PipelineTask.from_row(row).row()
    return _canonical(ours) != _canonical(theirs)


def _canonical(row: Mapping[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def apply(
    conn: Connection, spec: PipelineSpec, *, prune: bool = False, now: datetime | None = None
) -> ApplyResult:
    """Write the pipeline into ``tasks`` and ``task_dependencies`` on ``conn``, inside the
    caller's transaction (nothing is committed here). New tasks are inserted and changed ones
    updated by name, the file's tasks get exactly the file's parents, and this pipeline's tasks
    missing from the file are reported, or deleted when ``prune`` (batches that ran them keep
    them in their version; the next batch no longer has them). Applying the same file again
    writes nothing."""
    structural = validate_dag(dag_tasks(spec), {t.handler for t in spec.tasks})
    structural += retry_problems(spec) + call_problems(spec) + _asset_loops(spec)
    if structural:
        raise PipelineError([f"{spec.source}: {p}" for p in structural])
    try:
        return _apply(conn, spec, prune, now or datetime.now(UTC))
    except DBAPIError as exc:
        refusal = _refusal(exc, spec)
        if refusal is None:
            raise
        raise refusal from exc


def _asset_loops(spec: PipelineSpec) -> list[str]:
    """A pipeline waiting for an asset its own tasks update would start itself forever."""
    waits = set(spec.on_assets.assets) if spec.on_assets is not None else set()
    return [
        f"task {t.name!r} updates {asset!r}, which the pipeline waits for (on_assets): "
        "it would start itself forever"
        for t in spec.tasks
        for asset in t.updates
        if asset in waits
    ]


def _apply(conn: Connection, spec: PipelineSpec, prune: bool, now: datetime) -> ApplyResult:
    changes, stored = _read_plan(conn, spec)
    created = _write_tasks(conn, "insert_pipeline_tasks", spec, changes.create, now)
    _refuse_taken(spec, [t.name for t in changes.create if t.name not in created])
    updated = _write_tasks(conn, "update_pipeline_tasks", spec, changes.update, now)
    removed = _write_edges(conn, "delete_pipeline_edges", spec, changes.remove_edges, now)
    added = _write_edges(conn, "insert_pipeline_edges", spec, changes.add_edges, now)
    pruned = _delete_tasks(conn, spec, changes.stale) if prune and changes.stale else []
    deadline = dict(spec.deadline) if spec.deadline is not None else None
    if stored != (spec.description, deadline):
        row = {"pipeline": spec.pipeline, "description": spec.description}
        row["deadline"] = json.dumps(deadline) if deadline is not None else None
        conn.execute(query("set_pipeline_description"), row)
    names = [t.name for t in spec.tasks]
    return ApplyResult(
        pipeline=spec.pipeline,
        created=tuple(n for n in names if n in created),
        updated=tuple(n for n in names if n in updated),
        unchanged=tuple(n for n in names if n not in created and n not in updated),
        edges_added=tuple(added),
        edges_removed=tuple(removed),
        not_in_file=changes.stale,
        pruned=tuple(pruned),
        schedule=schedules.apply(conn, spec.pipeline, spec.schedule, prune, now),
        on_assets=asset_schedules.apply(conn, spec.pipeline, spec.on_assets, prune, now),
    )


def _read_plan(
    conn: Connection, spec: PipelineSpec
) -> tuple[Plan, tuple[str | None, dict[str, Any] | None]]:
    """Serialise applies of this pipeline, then read its rows once and compare; and the
    pipeline's stored description and deadline."""
    lock = conn.execute(query("lock_pipeline_apply"), {"pipeline": spec.pipeline}).one()
    params = {"pipeline": spec.pipeline, "names": [t.name for t in spec.tasks]}
    rows = conn.execute(query("pipeline_apply_tasks"), params).mappings().all()
    edges = conn.execute(query("export_pipeline_edges"), params).all()
    changes = plan(spec, [dict(r) for r in rows], [(e.parent, e.child) for e in edges])
    return changes, (lock.description, lock.deadline)


def _refuse_taken(spec: PipelineSpec, names: Sequence[str]) -> None:
    """New names someone inserted (plain SQL) after this apply looked."""
    if names:
        raise PipelineError(
            [f"{spec.source}: task {n!r} was just created by someone else" for n in names]
        )


def _write_tasks(
    conn: Connection, name: str, spec: PipelineSpec, tasks: Sequence[PipelineTask], now: datetime
) -> set[str]:
    """Insert or update these tasks in one statement; the names written."""
    if not tasks:
        return set()
    params = {
        "pipeline": spec.pipeline,
        "tasks": json.dumps([t.row() for t in tasks]),
        "now": now,
    }
    return set(conn.execute(query(name), params).scalars())


def _write_edges(
    conn: Connection, name: str, spec: PipelineSpec, edges: Sequence[Edge], now: datetime
) -> list[Edge]:
    """Delete or insert these edges in one statement; the (parent, child) edges written.
    Removals run first, so that reversing an edge is not a momentary cycle."""
    if not edges:
        return []
    params = {
        "pipeline": spec.pipeline,
        "parents": [parent for parent, _ in edges],
        "children": [child for _, child in edges],
        "now": now,
    }
    return sorted((r.parent, r.child) for r in conn.execute(query(name), params))


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
