"""The ``schedule:`` section of a pipeline file: load and check it, write it into the schedules
table on ``pipeline apply``, read it back for ``pipeline export``.

    schedule:
      cron: "0 6 1 * *"               # five fields (or @daily, @monthly, ...), on the zone's clock
      timezone: Europe/Brussels       # IANA; default Etc/UTC
      batch_id_template: "{interval_start:%Y-%m}"   # default {scheduled_for:%Y-%m-%dT%H:%M}
      catchup: latest                 # due ticks run: the newest only, or all (up to the limit)
      catchup_limit: 10
      max_active_batches: 1           # runs beyond it wait for a slot (catch-up runs always)
      overlap: skip                   # with catchup latest, a tick finding them running: skip/wait
      paused: false                   # how a new schedule starts; later: schedule pause/resume

``paused`` is applied when the schedule is created; afterwards pausing is the operator's
(``dagrelay schedule pause|resume``), and ``export`` writes the current state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection

from dagrelay.engine.ticks import Cron, ScheduleError, check_distinct_ids, check_template
from dagrelay.errors import PipelineError
from dagrelay.store import schedules as store

DEFAULT_TEMPLATE = "{scheduled_for:%Y-%m-%dT%H:%M}"  # the column default (migration 0009)


@dataclass(frozen=True)
class ScheduleSpec:
    """A pipeline's schedule; the defaults are the schedules table's column defaults."""

    cron: str
    timezone: str = "Etc/UTC"
    batch_id_template: str = DEFAULT_TEMPLATE
    catchup: Literal["latest", "all"] = "latest"
    catchup_limit: int = 10
    max_active_batches: int = 1
    overlap: Literal["skip", "wait"] = "skip"
    paused: bool = False


def from_yaml(data: Mapping[str, Any] | None, source: str) -> ScheduleSpec | None:
    """The section as a spec (its keys and types already passed the JSON Schema), checked:
    the cron expression, the zone, and a template that gives valid, distinct batch ids."""
    if data is None:
        return None
    spec = ScheduleSpec(**data)
    check_spec(spec, source)
    return spec


def check_spec(spec: ScheduleSpec, source: str) -> None:
    """``check`` as a ``PipelineError`` naming the file (or Python pipeline)."""
    try:
        check(spec)
    except ScheduleError as exc:
        raise PipelineError([f"{source}: schedule: {exc}"]) from exc


def check(spec: ScheduleSpec) -> None:
    cron = Cron(spec.cron, spec.timezone)
    check_template(spec.batch_id_template)
    check_distinct_ids(cron, spec.batch_id_template, datetime.now(UTC))


def apply(
    conn: Connection, pipeline: str, spec: ScheduleSpec | None, prune: bool, now: datetime
) -> str:
    """Write the file's schedule (in the caller's transaction). Without a section, an existing
    schedule is left alone, or deleted with ``prune``. Says what happened, for ApplyResult."""
    if spec is None:
        if prune:
            return "deleted" if store.delete(conn, pipeline) else "none"
        return "none" if store.row(conn, pipeline) is None else "not in the file, left in place"
    return store.upsert(conn, {"pipeline": pipeline, **asdict(spec)}, now)


def read(conn: Connection, pipeline: str) -> ScheduleSpec | None:
    row = store.row(conn, pipeline)
    if row is None:
        return None
    return ScheduleSpec(**{f.name: row[f.name] for f in fields(ScheduleSpec)})


def to_yaml(spec: ScheduleSpec) -> dict[str, Any]:
    """The section as ``export`` writes it: cron, then the fields that are not defaults."""
    document: dict[str, Any] = {"cron": spec.cron}
    for spec_field in fields(ScheduleSpec):
        value = getattr(spec, spec_field.name)
        if spec_field.default is not MISSING and value != spec_field.default:
            document[spec_field.name] = value
    return document
