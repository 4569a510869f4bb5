"""The invariants of dagrelay's state machine, written once (ARCHITECTURE.md, "Invariants checked
by the model"). Each invariant is one function that reads the rows of its own queries (declared
beside it with ``@reads``) and returns the violations it found, each a sentence a person can
read; an empty list means it holds. ``check_all`` runs them. The model-based test
(tests/integration/test_state_machine.py) calls them after every step and, with those of
quiescence, at quiescence.

``check_all`` reads the queries of every invariant it runs in one SQL statement (one round trip,
one snapshot; ``statement``): each query's rows come back as a JSON array in a column of their
own, and each invariant's function reads only its own. After every step of the model that is one
prepared statement instead of about twenty-five (profiled: the per-step checks were most of the
model's statements and of its client CPU).

Some invariants need what the model knows and the database does not: which batches an operator
cancelled and what had been claimed then (``Facts.cancelled``), and the pools' slot holders when
their slots were lowered (``Facts.grandfathered``). Those a query joins are passed to it as JSON
(``Query.facts``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, TextClause, text

from dagrelay.engine.asset_rules import Event, groups
from dagrelay.states import BatchStatus, TaskStatus

ALERTS_TOPIC = "dagrelay-alerts"
SKIP_ENV = "DAGRELAY_MODEL_SKIP"  # comma-separated invariant names left out (to verify a fix)

FINISHED = (BatchStatus.SUCCESS, BatchStatus.FAILED, BatchStatus.CANCELLED)
CAN_RUN = (TaskStatus.NEW, TaskStatus.QUEUED, TaskStatus.RETRY, TaskStatus.PROCESSING)
DONE_OK = (TaskStatus.SUCCESS, TaskStatus.SKIPPED)
FAILED_ITEM = (TaskStatus.ERROR, TaskStatus.CANCELLED, TaskStatus.UPSTREAM_FAILED)
# Attempts (tl) with their batch (b) and the task as the batch's version has it (t).
ATTEMPTS = (
    "task_log tl JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id "
    "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id"
)

Batch = tuple[str, str]  # (pipeline, batch_id)
AttemptKey = tuple[int, int]  # (attempt_id, attempt)
Rows = list[dict[str, Any]]  # a query's rows, as JSON objects (column name -> value)


@dataclass
class Facts:
    """What the model knows besides the database."""

    # batches an operator cancelled (and no resume or accepted rerun lifted since): the
    # attempt ids that existed when the cancel landed
    cancelled: dict[Batch, frozenset[int]] = field(default_factory=dict)
    # pool -> the PROCESSING log_ids holding its slots when they were last lowered
    grandfathered: dict[str, frozenset[int]] = field(default_factory=dict)
    # batches an operator resumed (and did not cancel again since)
    resumed: set[Batch] = field(default_factory=set)
    # deferred attempts whose handler's cancel was called: (pipeline, batch, task, attempt)
    stopped: set[tuple[str, str, str, int]] = field(default_factory=set)
    # deliveries of the engine's own messages that raised (would be redelivered forever)
    raised: list[str] = field(default_factory=list)


# -- the queries: declared by each invariant, read by check_all in one statement -------------------


@dataclass(frozen=True)
class Query:
    """One query an invariant reads: its SQL (a SELECT; ``:name`` binds), constant parameters,
    and parameters taken from the model's ``Facts`` (a JSON text, for ``jsonb_to_recordset``)."""

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)
    facts: Callable[[Facts], Mapping[str, Any]] | None = None

    def values(self, facts: Facts) -> dict[str, Any]:
        return {**self.params, **(self.facts(facts) if self.facts else {})}


Check = Callable[[Mapping[str, Rows], Facts], list[str]]
QUERIES: dict[str, dict[str, Query]] = {}  # invariant name -> its queries by name


def reads(**queries: Query | str) -> Callable[[Check], Check]:
    """Declare the queries an invariant reads (its function gets their rows by these names)."""

    def register(check: Check) -> Check:
        QUERIES[check.__name__] = {
            k: q if isinstance(q, Query) else Query(q) for k, q in queries.items()
        }
        return check

    return register


# a bind parameter as SQLAlchemy's text() finds one (not a ``::type`` cast)
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


@lru_cache(maxsize=16)
def statement(names: tuple[str, ...]) -> TextClause:
    """One SELECT of one row: for each query of the invariants ``names``, a column
    ``<invariant>.<query>`` holding its rows as a JSON array (in the query's order). Each
    query's binds are prefixed with its column's number so that queries never share one."""
    columns = []
    for i, (name, key, query) in enumerate(_queries(names)):
        sql = _prefixed(query.sql, f"q{i}_")
        columns.append(f"(SELECT coalesce(json_agg(r), '[]') FROM ({sql}) r) AS \"{name}.{key}\"")
    return text("SELECT " + ",\n".join(columns))


def _prefixed(sql: str, prefix: str) -> str:
    return _BIND.sub(lambda m: f":{prefix}{m.group(1)}", sql)


def _queries(names: Iterable[str]) -> list[tuple[str, str, Query]]:
    return [(n, k, q) for n in names for k, q in QUERIES[n].items()]


def snapshot(conn: Connection, facts: Facts, names: tuple[str, ...]) -> dict[str, dict[str, Rows]]:
    """The rows of every query of the invariants ``names``, read in one statement: invariant
    name -> query name -> rows."""
    params = {
        f"q{i}_{k}": v
        for i, (_, _, query) in enumerate(_queries(names))
        for k, v in query.values(facts).items()
    }
    row = conn.execute(statement(names), params).one()
    read: dict[str, dict[str, Rows]] = {n: {} for n in names}
    for (name, key, _), rows in zip(_queries(names), row, strict=True):
        read[name][key] = rows
    return read


def _facts_json(rows: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(rows))


def _cancelled(facts: Facts) -> dict[str, str]:
    return {
        "cancelled": _facts_json(
            {"pipeline": p, "batch_id": b, "known": sorted(attempts)}
            for (p, b), attempts in sorted(facts.cancelled.items())
        )
    }


def _stopped(facts: Facts) -> dict[str, str]:
    return {
        "stopped": _facts_json(
            {"pipeline": p, "batch_id": b, "task": t, "attempt": a}
            for p, b, t, a in sorted(facts.stopped)
        )
    }


def _resumed(facts: Facts) -> dict[str, str]:
    return {
        "resumed": _facts_json({"pipeline": p, "batch_id": b} for p, b in sorted(facts.resumed))
    }


# -- after every step ------------------------------------------------------------------------------


@reads(
    rows=Query(
        "SELECT b.pipeline, b.batch_id, b.status::text AS batch, t.name, tl.map_index, "
        "tl.status::text AS status FROM batches b "
        "JOIN task_log tl ON tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id "
        "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id "
        "WHERE b.status = ANY(CAST(:finished AS batch_status[])) "
        "AND tl.status = ANY(CAST(:open AS task_status[])) ORDER BY 1, 2, 4, 5",
        {"finished": [s.value for s in FINISHED], "open": [s.value for s in CAN_RUN]},
    )
)
def finished_batch_has_nothing_runnable(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """A finished batch (SUCCESS, FAILED, CANCELLED) has no task that can still run or runs."""
    return [
        f"batch {r['pipeline']}/{r['batch_id']} is {r['batch']} but {_task(r)} is {r['status']}"
        for r in read["rows"]
    ]


@reads(
    missing=Query(
        "SELECT b.pipeline, b.batch_id, t.name, -1 AS map_index, tl.status::text AS status "
        "FROM batches b JOIN version_tasks t ON t.version_id = b.version_id "
        "LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id "
        "AND tl.map_index = -1 "
        "WHERE b.status = 'SUCCESS' AND b.start_task_id IS NULL "
        "AND (tl.status IS NULL OR tl.status <> ALL(CAST(:ok AS task_status[]))) "
        "ORDER BY 1, 2, 3",
        {"ok": [s.value for s in DONE_OK]},
    ),
    groups=Query(
        "SELECT b.pipeline, b.batch_id, t.name, g.status::text AS status, m.tolerated, "
        "count(i.*) FILTER (WHERE i.status = ANY(CAST(:bad AS task_status[]))) AS failed, "
        "count(i.*) FILTER (WHERE i.status <> ALL(CAST(:ended AS task_status[]))) AS other, "
        "count(i.*) AS items, m.total "
        "FROM batches b JOIN task_log g ON g.batch_id = b.batch_id AND g.map_index = -1 "
        "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = g.task_id "
        "JOIN map_groups m ON m.batch_id = b.batch_id AND m.task_id = g.task_id "
        "LEFT JOIN task_log i ON i.batch_id = b.batch_id AND i.task_id = g.task_id "
        "AND i.map_index >= 0 "
        "WHERE b.status = 'SUCCESS' AND g.status = 'SUCCESS' AND t.map IS NOT NULL "
        "GROUP BY 1, 2, 3, 4, 5, 9 ORDER BY 1, 2, 3",
        {
            "bad": [s.value for s in FAILED_ITEM],
            "ended": [s.value for s in (*DONE_OK, *FAILED_ITEM)],
        },
    ),
)
def success_means_everything_ran(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """SUCCESS: every task of the batch's version ended SUCCESS or SKIPPED; a mapped task's
    items all did, or the failed ones are within its declared tolerated_failures."""
    found = [
        f"batch {r['pipeline']}/{r['batch_id']} is SUCCESS but {_task(r)} "
        + ("never ran (no row)" if r["status"] is None else f"is {r['status']}")
        for r in read["missing"]
    ]
    for g in read["groups"]:
        where = f"batch {g['pipeline']}/{g['batch_id']} is SUCCESS but mapped task {g['name']}"
        if g["failed"] > g["tolerated"]:
            found.append(f"{where} has {g['failed']} failed items, tolerates {g['tolerated']}")
        if g["other"]:
            found.append(f"{where} has {g['other']} items that never ended")
        if g["items"] != g["total"]:
            found.append(f"{where} has {g['items']} item rows of {g['total']}")
    return found


# the batches an operator cancelled (Facts.cancelled), as rows
CANCELLED = (
    "jsonb_to_recordset(CAST(:cancelled AS jsonb)) AS f(pipeline text, batch_id text, "
    "known bigint[])"
)


@reads(
    statuses=Query(
        f"SELECT f.pipeline, f.batch_id, b.status::text AS status FROM {CANCELLED} "
        "LEFT JOIN batches b ON b.pipeline = f.pipeline AND b.batch_id = f.batch_id "
        "ORDER BY 1, 2",
        facts=_cancelled,
    ),
    claimed=Query(
        f"SELECT f.pipeline, f.batch_id, a.attempt_id, t.name, a.attempt FROM {CANCELLED} "
        "JOIN task_attempts a ON a.batch_id = f.batch_id "
        "JOIN batches b ON b.batch_id = a.batch_id AND b.pipeline = f.pipeline "
        "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = a.task_id "
        "WHERE a.attempt_id <> ALL(f.known) "
        "AND NOT t.teardown "  # a cancel spares the teardown tasks: they run after it
        "ORDER BY 1, 2, a.attempt_id",
        facts=_cancelled,
    ),
)
def cancel_holds_until_resumed(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """A cancelled batch stays CANCELLING/CANCELLED and claims nothing new until a resume (or
    a rerun accepted once it was CANCELLED), but its teardown tasks."""
    found: list[str] = []
    claimed: dict[Batch, Rows] = {}
    for r in read["claimed"]:
        claimed.setdefault((r["pipeline"], r["batch_id"]), []).append(r)
    for s in read["statuses"]:
        pipeline, batch_id, status = s["pipeline"], s["batch_id"], s["status"]
        if status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            found.append(f"cancelled batch {pipeline}/{batch_id} is {status} without a resume")
        found += [
            f"cancelled batch {pipeline}/{batch_id}: {r['name']} attempt {r['attempt']} was "
            "claimed after the cancel"
            for r in claimed.get((pipeline, batch_id), [])
        ]
    return found


@reads(
    rows="SELECT tl.pipeline, tl.batch_id, t.name, tl.map_index, tl.attempt, "
    "count(a.*) AS rows, count(DISTINCT a.attempt) AS distinct_attempts, "
    "coalesce(max(a.attempt), 0) AS top "
    f"FROM {ATTEMPTS} "
    "LEFT JOIN task_attempts a ON a.log_id = tl.log_id "
    "GROUP BY 1, 2, 3, 4, 5 "
    "HAVING count(a.*) <> tl.attempt OR count(DISTINCT a.attempt) <> tl.attempt "
    "OR coalesce(max(a.attempt), 0) <> tl.attempt ORDER BY 1, 2, 3, 4"
)
def attempts_claimed_once(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """No attempt is claimed twice, none is lost: a row's attempts are exactly 1..attempt."""
    return [
        f"{r['pipeline']}/{r['batch_id']} {_task(r)} is at attempt {r['attempt']} with "
        f"{r['rows']} attempt rows ({r['distinct_attempts']} distinct, highest {r['top']})"
        for r in read["rows"]
    ]


@reads(
    pools="SELECT p.name, p.slots, coalesce(sum(h.pool_slots), 0) AS held, "
    "coalesce(array_agg(h.log_id) FILTER (WHERE h.log_id IS NOT NULL), '{}') AS holders "
    "FROM pools p LEFT JOIN task_log h ON h.pool = p.name AND h.limited "
    "AND h.status = 'PROCESSING' GROUP BY 1, 2 ORDER BY 1",
    groups="SELECT tl.pipeline, tl.batch_id, t.name, (t.map->>'max_parallel')::int AS limit_, "
    "count(*) AS running FROM "
    f"{ATTEMPTS} "
    "WHERE tl.map_index >= 0 AND tl.status = 'PROCESSING' AND t.map ? 'max_parallel' "
    "GROUP BY 1, 2, 3, 4 HAVING count(*) > (t.map->>'max_parallel')::int",
)
def pools_within_slots(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """A pool never has more slot holders than slots (holders from before its slots were
    lowered keep theirs until they end); a map's max_parallel likewise."""
    found: list[str] = []
    for p in read["pools"]:
        old = facts.grandfathered.get(p["name"], frozenset()) & set(p["holders"])
        if p["held"] > max(p["slots"], len(old)):
            found.append(
                f"pool {p['name']} has {p['held']} slots held, {p['slots']} slots "
                f"({len(old)} holders from before a lower count)"
            )
    found += [
        f"{g['pipeline']}/{g['batch_id']} mapped task {g['name']} runs {g['running']} "
        f"instances, max_parallel {g['limit_']}"
        for g in read["groups"]
    ]
    return found


@reads(
    rows=Query(
        "SELECT tl.pipeline, tl.batch_id, t.name, tl.map_index, tl.status::text AS status, "
        "g.status::text AS group_status, "
        "(SELECT count(*) FROM outbox o WHERE o.topic = :topic "
        " AND (o.payload->>'log_id')::bigint = tl.log_id) AS alerts, "
        "(SELECT count(*) FROM task_log i WHERE tl.map_index = -1 AND t.map IS NOT NULL "
        " AND i.batch_id = tl.batch_id AND i.task_id = tl.task_id AND i.map_index >= 0) "
        " AS items, "
        "(SELECT count(*) FROM outbox o JOIN task_log i ON (o.payload->>'log_id')::bigint "
        " = i.log_id WHERE o.topic = :topic AND tl.map_index = -1 AND t.map IS NOT NULL "
        " AND i.batch_id = tl.batch_id AND i.task_id = tl.task_id AND i.map_index >= 0) "
        " AS item_alerts "
        "FROM task_log tl JOIN batches b ON b.batch_id = tl.batch_id "
        "AND b.pipeline = tl.pipeline "
        "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id "
        "LEFT JOIN task_log g ON tl.map_index >= 0 AND g.batch_id = tl.batch_id "
        "AND g.task_id = tl.task_id AND g.map_index = -1 ORDER BY 1, 2, 3, 4",
        {"topic": ALERTS_TOPIC},
    )
)
def one_alert_per_untolerated_failure(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """Exactly one task_failed alert per task that failed for good (an instance of a mapped
    task whose failures its group tolerates is no such failure), none for anything else.
    Alerts of rows a rerun replaced are history and not counted."""
    found: list[str] = []
    for r in read["rows"]:
        where = f"{r['pipeline']}/{r['batch_id']} {_task(r)} ({r['status']})"
        group_by_items = r["map_index"] == -1 and r["items"] > 0
        if r["alerts"] > 1:
            found.append(f"{where} raised {r['alerts']} alerts")
        elif r["status"] != TaskStatus.ERROR and r["alerts"]:
            found.append(f"{where} raised an alert but did not fail")
        elif r["status"] == TaskStatus.ERROR and r["map_index"] >= 0:
            if r["group_status"] == TaskStatus.SUCCESS and r["alerts"]:
                found.append(f"{where} raised an alert; its group tolerates the failure")
        elif r["status"] == TaskStatus.ERROR and group_by_items:
            if not r["alerts"] + r["item_alerts"]:
                found.append(f"{where} failed (by its items) without an alert")
        elif r["status"] == TaskStatus.ERROR and not r["alerts"]:
            found.append(f"{where} failed without an alert")
    return found


@reads(
    misses=Query(
        "SELECT m.pipeline, m.batch_id, m.task, "
        "coalesce(m.ended_at <= m.deadline_at, false) AS ended_in_time, "
        "(SELECT count(*) FROM outbox o WHERE o.topic = :topic "
        " AND o.payload->>'kind' = 'deadline_missed' AND o.payload->>'pipeline' = m.pipeline "
        " AND o.payload->>'batch_id' = m.batch_id "
        " AND coalesce(o.payload->>'task', '') = m.task) AS alerts, "
        "(SELECT count(*) FROM task_attempts a JOIN task_log tl ON tl.log_id = a.log_id "
        " JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id "
        " JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id "
        " WHERE tl.batch_id = m.batch_id AND t.name = m.task "
        " AND a.error LIKE 'DeadlineMissed:%') AS failed_attempts "
        "FROM deadline_misses m ORDER BY 1, 2, 3",
        {"topic": ALERTS_TOPIC},
    ),
    orphans=Query(
        "SELECT o.payload->>'batch_id' AS batch_id, o.payload->>'task' AS task FROM outbox o "
        "WHERE o.topic = :topic AND o.payload->>'kind' = 'deadline_missed' AND NOT EXISTS ("
        " SELECT 1 FROM deadline_misses m WHERE m.pipeline = o.payload->>'pipeline' "
        " AND m.batch_id = o.payload->>'batch_id' "
        " AND m.task = coalesce(o.payload->>'task', ''))",
        {"topic": ALERTS_TOPIC},
    ),
)
def one_alert_per_missed_deadline(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """Each deadline missed is recorded once with exactly one deadline_missed alert, and no
    alert names a deadline that was not recorded missed; nothing that ended by its deadline is
    recorded as a miss; a task's ``fail`` ended it at most once."""
    found: list[str] = []
    for r in read["misses"]:
        where = f"{r['pipeline']}/{r['batch_id']} {r['task'] or '(batch)'}"
        if r["alerts"] != 1:
            found.append(f"{where}: deadline missed with {r['alerts']} alerts")
        if r["ended_in_time"]:
            found.append(f"{where}: recorded missed although it ended by its deadline")
        if r["failed_attempts"] > 1:
            found.append(f"{where}: failed by its deadline {r['failed_attempts']} times")
    found += [
        f"{r['batch_id']} {r['task']}: an alert of a miss never recorded" for r in read["orphans"]
    ]
    return found


@reads(
    stopped=Query(
        "SELECT f.pipeline, f.batch_id, f.task, f.attempt, a.outcome::text AS outcome "
        "FROM jsonb_to_recordset(CAST(:stopped AS jsonb)) "
        "AS f(pipeline text, batch_id text, task text, attempt int) "
        "JOIN task_attempts a ON a.batch_id = f.batch_id AND a.attempt = f.attempt "
        "JOIN batches b ON b.batch_id = a.batch_id AND b.pipeline = f.pipeline "
        "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = a.task_id "
        "AND t.name = f.task ORDER BY 1, 2, 3, 4",
        facts=_stopped,
    ),
    left="SELECT tl.pipeline, tl.batch_id, t.name, tl.map_index FROM "
    f"{ATTEMPTS} "
    "WHERE t.handler = 'model.job' AND tl.job IS NOT NULL AND b.status = 'CANCELLED'",
)
def stopped_work_never_succeeds(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """Deferred work whose handler's cancel stopped it (the batch was cancelled, or the lease
    expired) does not end SUCCESS; and no attempt of work with a cancel is left deferred in a
    batch that is CANCELLED (a cancel stops it at once: its poll ends it CANCELLED)."""
    found = [
        f"{r['pipeline']}/{r['batch_id']} {r['task']} attempt {r['attempt']}: stopped by its "
        "cancel, yet SUCCESS"
        for r in read["stopped"]
        if r["outcome"] == TaskStatus.SUCCESS
    ]
    found += [f"{r['pipeline']}/{r['batch_id']} {_task(r)}: still deferred, batch CANCELLED"
              for r in read["left"]]  # fmt: skip
    return found


@reads(
    rows="SELECT message_id, reason FROM rejected_messages WHERE message_id LIKE 'outbox-%' "
    "ORDER BY rejected_id"
)
def engine_messages_never_rejected(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """Every message ends processed, rejected or dead-lettered; the engine's own messages (from
    its outbox) are never recorded as bad, and their delivery never raises."""
    found = [
        f"the engine's own message {r['message_id']} was rejected: {r['reason']}"
        for r in read["rows"]
    ]
    return found + [f"a delivery of the engine's own message raised: {e}" for e in facts.raised]


@reads(
    rows=Query(
        "SELECT b.pipeline, b.batch_id, t.name, -1 AS map_index, tl.status::text AS status "
        "FROM batches b JOIN version_tasks t ON t.version_id = b.version_id AND t.teardown "
        "LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id "
        "AND tl.map_index = -1 "
        "WHERE b.status = 'CANCELLED' AND b.start_task_id IS NULL "
        "AND (tl.status IS NULL OR tl.status = ANY(CAST(:open AS task_status[]))) "
        "ORDER BY 1, 2, 3",
        {"open": [s.value for s in (*CAN_RUN, TaskStatus.CANCELLED)]},
    )
)
def cancel_waits_for_teardowns(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """A cancel spares the teardown tasks and waits for them: a CANCELLED batch has no
    teardown task that could still run (each has a row that ended, none CANCELLED)."""
    return [
        f"batch {r['pipeline']}/{r['batch_id']} is CANCELLED but its teardown task {_task(r)} "
        + ("never ran (no row)" if r["status"] is None else f"is {r['status']}")
        for r in read["rows"]
    ]


@reads(
    rows="SELECT pipeline, params->>'scheduled_for' AS tick, "
    "string_agg(batch_id, ', ' ORDER BY batch_id) AS ids FROM batches "
    "WHERE triggered_by LIKE 'schedule:%' GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2"
)
def tick_starts_one_batch(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """A schedule's tick starts at most one batch."""
    return [f"tick {r['tick']} of {r['pipeline']} started batches {r['ids']}" for r in read["rows"]]


@reads(
    wins="WITH wins AS (SELECT b.pipeline, a.batch_id, a.task_id, t.name AS task, u.asset, "
    "  count(*) AS successes FROM task_attempts a "
    "  JOIN batches b ON b.batch_id = a.batch_id "
    "  JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = a.task_id "
    "  CROSS JOIN LATERAL unnest(t.updates) AS u(asset) "
    "  WHERE a.outcome = 'SUCCESS' AND t.map IS NULL GROUP BY 1, 2, 3, 4, 5) "
    "SELECT w.*, (SELECT count(*) FROM asset_events e WHERE e.asset = w.asset "
    "  AND e.pipeline = w.pipeline AND e.batch_id = w.batch_id "
    "  AND e.task_id = w.task_id) AS events FROM wins w",
    triggered="SELECT b.pipeline, b.batch_id, array(SELECT unnest(s.assets) EXCEPT "
    "  SELECT e.asset FROM asset_triggers c JOIN asset_events e USING (event_id) "
    "  WHERE c.pipeline = b.pipeline AND c.batch_id = b.batch_id) AS missing "
    "FROM batches b JOIN asset_schedules s ON s.pipeline = b.pipeline "
    "WHERE b.triggered_by LIKE 'assets:%' ORDER BY 1, 2",
    consumed="SELECT DISTINCT c.pipeline, c.batch_id FROM asset_triggers c WHERE NOT EXISTS "
    "(SELECT 1 FROM batches b WHERE b.pipeline = c.pipeline AND b.batch_id = c.batch_id)",
    # each schedule's pending events: those of its assets it has not consumed
    pending="SELECT s.pipeline AS schedule, s.assets, e.event_id, e.asset, e.pipeline, "
    "e.batch_id, e.task, e.partition_key FROM asset_schedules s "
    "JOIN asset_events e ON e.asset = ANY (s.assets) WHERE NOT s.paused "
    "AND NOT EXISTS (SELECT 1 FROM asset_triggers c WHERE c.pipeline = s.pipeline "
    "AND c.event_id = e.event_id) ORDER BY 1, 3",
)
def asset_batches_have_their_triggers(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """Assets: every success of a (non-mapped) task that updates assets recorded one event per
    asset, no more; each asset-triggered batch exists with events of every asset its schedule
    waits for as its trigger; no event is consumed twice (the primary key) or left pending in a
    complete group (the schedule starts a batch in the transaction that completes it)."""
    found = [
        f"{r['pipeline']}/{r['batch_id']} {r['task']}: {r['successes']} successes, "
        f"{r['events']} events of {r['asset']}"
        for r in read["wins"]
        if r["successes"] != r["events"]
    ]
    found += [
        f"asset-triggered batch {r['pipeline']}/{r['batch_id']} lacks events of {r['missing']}"
        for r in read["triggered"]
        if r["missing"]
    ]
    found += [
        f"events consumed by {r['pipeline']} for batch {r['batch_id']}, which does not exist"
        for r in read["consumed"]
    ]
    pending: dict[str, tuple[list[str], list[Event]]] = {}
    for e in read["pending"]:
        assets, events = pending.setdefault(e["schedule"], (e["assets"], []))
        events.append(
            Event(e["event_id"], e["asset"], e["pipeline"], e["batch_id"], e["task"],
                  e["partition_key"])
        )  # fmt: skip
    for schedule, (assets, events) in pending.items():
        found += [
            f"{schedule} left a complete group of events pending: "
            f"{sorted(e.event_id for e in group)}"
            for group in groups(assets, events)
        ]
    return found


@reads(
    bad="SELECT tl.pipeline, tl.batch_id, t.name, tl.map_index, tl.output ->> 'key' AS key "
    f"FROM {ATTEMPTS} "
    "WHERE t.handler = 'sensor.signal' AND tl.status = 'SUCCESS' AND NOT EXISTS ("
    "  SELECT 1 FROM signals s WHERE s.signal_id = (tl.output ->> 'signal_id')::bigint "
    "  AND s.key = replace(t.params ->> 'key', '{batch_id}', tl.batch_id) "
    "  AND s.received_at >= b.created_at) ORDER BY 1, 2, 3",
    left="SELECT tl.pipeline, tl.batch_id, t.name, tl.map_index, b.status::text AS batch "
    f"FROM {ATTEMPTS} "
    "WHERE tl.job ? 'waiting_for' "
    "AND b.status IN ('SUCCESS', 'FAILED', 'CANCELLED') ORDER BY 1, 2, 3",
)
def sensor_ends_on_its_signal(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """A signal sensor succeeds only on a recorded signal of its key that counts (received at
    or after its batch started, ARCHITECTURE.md "Sensors"); a waiting sensor (PROCESSING with
    what it waits for) is never left in a batch that has finished."""
    found = [
        f"sensor {_task(r)} of {r['pipeline']}/{r['batch_id']} succeeded without a signal "
        f"{r['key']!r} that counts"
        for r in read["bad"]
    ]
    return found + [
        f"sensor {_task(r)} still waits in {r['batch']} batch {r['pipeline']}/{r['batch_id']}"
        for r in read["left"]
    ]


# -- at quiescence ---------------------------------------------------------------------------------


@reads(
    batches="SELECT pipeline, batch_id, status::text AS status FROM batches "
    "WHERE status IN ('RUNNING', 'CANCELLING') ORDER BY 1, 2",
    tasks=Query(
        "SELECT tl.pipeline, tl.batch_id, t.name, tl.map_index, tl.status::text AS status "
        "FROM task_log tl JOIN batches b ON b.batch_id = tl.batch_id "
        "AND b.pipeline = tl.pipeline "
        "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id "
        "WHERE tl.status = ANY(CAST(:open AS task_status[])) ORDER BY 1, 2, 3, 4",
        {"open": [s.value for s in CAN_RUN]},
    ),
)
def quiescent_batches_finished(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """With every message delivered and the sweeper idle, every batch has finished and nothing
    is open."""
    found = [
        f"batch {r['pipeline']}/{r['batch_id']} is still {r['status']} at quiescence"
        for r in read["batches"]
    ]
    return found + [
        f"{r['pipeline']}/{r['batch_id']} {_task(r)} is still {r['status']} at quiescence"
        for r in read["tasks"]
    ]


@reads(
    rows=Query(
        "SELECT f.pipeline, f.batch_id, b.status::text AS batch, t.name, "
        "coalesce(tl.map_index, -1) AS map_index, tl.status::text AS status "
        "FROM jsonb_to_recordset(CAST(:resumed AS jsonb)) AS f(pipeline text, batch_id text) "
        "JOIN batches b ON b.pipeline = f.pipeline AND b.batch_id = f.batch_id "
        "JOIN version_tasks t ON t.version_id = b.version_id "
        "LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id "
        "WHERE b.status <> 'CANCELLED' "
        "AND b.start_task_id IS NULL AND (tl.log_id IS NULL OR tl.status = 'CANCELLED') "
        "ORDER BY 1, 2, 4, 5",
        facts=_resumed,
    )
)
def resumed_batch_ran_everything(read: Mapping[str, Rows], facts: Facts) -> list[str]:
    """After a resume, at quiescence, what the cancel stopped has run: a resumed batch that
    did not end CANCELLED has no CANCELLED row (an item's neither) and no task without a row."""
    return [
        f"resumed batch {r['pipeline']}/{r['batch_id']} ended {r['batch']} but {_task(r)} "
        + ("never ran (no row)" if r["status"] is None else "is CANCELLED: it never ran")
        for r in read["rows"]
    ]


EVERY_STEP: tuple[Check, ...] = (
    finished_batch_has_nothing_runnable,
    success_means_everything_ran,
    cancel_holds_until_resumed,
    attempts_claimed_once,
    pools_within_slots,
    one_alert_per_untolerated_failure,
    one_alert_per_missed_deadline,
    stopped_work_never_succeeds,
    engine_messages_never_rejected,
    cancel_waits_for_teardowns,
    tick_starts_one_batch,
    asset_batches_have_their_triggers,
    sensor_ends_on_its_signal,
)
AT_QUIESCENCE: tuple[Check, ...] = (
    *EVERY_STEP,
    quiescent_batches_finished,
    resumed_batch_ran_everything,
)
NAMES = frozenset(f.__name__ for f in AT_QUIESCENCE)


def skipped(env: str | None = None) -> frozenset[str]:
    """The invariants left out by ``DAGRELAY_MODEL_SKIP`` (unknown names are an error)."""
    names = frozenset(n.strip() for n in (env or os.environ.get(SKIP_ENV, "")).split(",") if n)
    unknown = names - NAMES
    if unknown:
        raise ValueError(f"{SKIP_ENV}: unknown invariants {sorted(unknown)}; known {sorted(NAMES)}")
    return names


def check_all(
    conn: Connection, facts: Facts, *, quiescent: bool = False, skip: Iterable[str] = ()
) -> list[str]:
    """Every invariant (those of quiescence too when ``quiescent``), minus ``skip``; the
    violations, each prefixed with the invariant's name. Their queries run as one statement
    (``snapshot``)."""
    left_out = set(skip)
    checks = [c for c in (AT_QUIESCENCE if quiescent else EVERY_STEP) if c.__name__ not in left_out]
    read = snapshot(conn, facts, tuple(c.__name__ for c in checks))
    found: list[str] = []
    for check in checks:
        found += [f"{check.__name__}: {v}" for v in check(read[check.__name__], facts)]
    return found


def _task(row: Mapping[str, Any]) -> str:
    index = row["map_index"]
    return row["name"] if index is None or index < 0 else f"{row['name']}[{index}]"
