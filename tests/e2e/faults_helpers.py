"""Helpers of the fault-injection tests (test_faults.py).

First what the tests make the router run, then what the tests use to read the outcome back
(``tally``) and to duplicate messages (``Duplicator``); the router never imports the latter.

Tasks call these through the ``python.call`` handler, e.g.
``{"callable": "tests.e2e.faults_helpers:record_effect"}``. Each records its side effect as
one row (batch_id, task, attempt) in the ``effects`` table of the router's own database
(``DATABASE_URL``), so a test can count how often each attempt's work really happened.
The ``time.sleep`` calls here are the simulated work of a handler, not test synchronisation.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from google.api_core.exceptions import DeadlineExceeded, ServiceUnavailable
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from dagrelay.handlers.registry import HandlerContext

if TYPE_CHECKING:
    from dagrelay.local.stack import StackInfo

EFFECTS_DDL = """
CREATE TABLE effects (
    effect_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id    text NOT NULL,
    task        text NOT NULL,
    attempt     integer NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz,  -- when the handler began (sleep_then_record)
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
RECORD = "tests.e2e.faults_helpers:record_effect"
SLEEP_THEN_RECORD = "tests.e2e.faults_helpers:sleep_then_record"
HANG_FIRST_ATTEMPT = "tests.e2e.faults_helpers:hang_first_attempt"


@cache
def _db() -> Engine:
    # No pool: a connection killed by the test (pg_terminate_backend) is never reused.
    return create_engine(os.environ["DATABASE_URL"], poolclass=NullPool)


def record_effect(context: HandlerContext, started_at: datetime | None = None) -> dict[str, Any]:
    """The side effect: one committed row per run of this handler."""
    with _db().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO effects (batch_id, task, attempt, pid, started_at) "
                "VALUES (:batch_id, :task, :attempt, :pid, :started_at)"
            ),
            {
                "batch_id": context.batch_id,
                "task": context.task,
                "attempt": context.attempt,
                "pid": os.getpid(),
                "started_at": started_at,
            },
        )
    return {"attempt": context.attempt}


def sleep_then_record(context: HandlerContext, seconds: float) -> dict[str, Any]:
    """Work that takes a while, then the side effect (with when the work began: the interval
    the handler ran, inside the one its attempt held a pool slot)."""
    started_at = datetime.now(UTC)
    time.sleep(seconds)
    return record_effect(context, started_at)


def hang_first_attempt(context: HandlerContext, max_s: float = 30.0) -> dict[str, Any]:
    """Attempt 1 hangs (no heartbeat) until a later attempt of the same task has succeeded, at
    most ``max_s``; then, as a zombie, it still writes its side effect and returns a result the
    engine must reject. Later attempts record their effect at once."""
    if context.attempt == 1:
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline and not _superseded(context):
            time.sleep(0.1)
    return record_effect(context)


def _superseded(context: HandlerContext) -> bool:
    with _db().connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT 1 FROM task_log tl JOIN tasks t USING (task_id) "
                    "WHERE tl.batch_id = :b AND t.name = :t "
                    "AND tl.status = 'SUCCESS' AND tl.attempt > :a"
                ),
                {"b": context.batch_id, "t": context.task, "a": context.attempt},
            ).first()
        )


# -- read back by the tests (not used in the router) ---------------------------------------------


@dataclass
class Tally:
    """What happened to one batch, read from the database."""

    tasks: dict[str, dict[str, Any]]  # name -> task_log row (+ handler, params)
    attempts: dict[str, list[dict[str, Any]]]  # name -> task_attempts rows
    effects: Counter[tuple[str, int]]  # (task, attempt) -> rows
    fanin: dict[str, dict[str, int]]  # name -> counters
    parents: dict[str, int]  # name -> number of parents in the definition
    rows_per_task: dict[str, int]  # name -> task_log rows in the batch
    creating_messages: dict[str, int]  # name -> run_task outbox rows written with the row
    messages: dict[str, int]  # name -> all run_task outbox rows (retries, requeues)
    defined: set[str]

    @property
    def runs(self) -> int:
        return sum(len(a) for a in self.attempts.values())

    def records(self, name: str) -> bool:
        return "faults_helpers" in str(self.tasks[name]["params"].get("callable", ""))

    def lost(self) -> list[str]:
        missing = [f"{n}: no task_log row" for n in self.defined - set(self.tasks)]
        failed = [f"{n}: {r['status']}" for n, r in self.tasks.items() if r["status"] != "SUCCESS"]
        no_effect = [
            f"{n}: no effect for attempt {r['attempt']}"
            for n, r in self.tasks.items()
            if self.records(n) and self.effects[(n, r["attempt"])] == 0
        ]
        return missing + failed + no_effect

    def doubled(self) -> list[str]:
        rows = [f"{n}: {c} task_log rows" for n, c in self.rows_per_task.items() if c != 1]
        effects = [f"{t} attempt {a}: {c} effects" for (t, a), c in self.effects.items() if c > 1]
        created = [f"{n}: created by {c} messages" for n, c in self.creating_messages.items()]
        created = [
            s for s, c in zip(created, self.creating_messages.values(), strict=True) if c > 1
        ]
        counted = [
            f"{n}: fan-in counted {c['succeeded'] + c['failed'] + c['skipped']}/{self.parents[n]}"
            for n, c in self.fanin.items()
            if c["succeeded"] + c["failed"] + c["skipped"] != self.parents[n]
            or c["parents"] != self.parents[n]
        ]
        return rows + effects + created + counted

    def effects_of_unsuccessful_attempts(self) -> list[tuple[str, int]]:
        return sorted(
            (t, a) for (t, a) in self.effects if self.tasks.get(t, {}).get("attempt") != a
        )


def tally(db: Engine, pipeline: str, batch_id: str) -> Tally:
    params = {"p": pipeline, "b": batch_id}
    with db.connect() as conn:
        defined = {r.name: r for r in conn.execute(text(_DEFINED), params)}
        log_rows = conn.execute(text(_TASK_LOG), params).mappings().all()
        attempts: dict[str, list[dict[str, Any]]] = {}
        for row in conn.execute(text(_ATTEMPTS), params).mappings():
            attempts.setdefault(row["name"], []).append(dict(row))
        effects = Counter(
            (r.task, r.attempt)
            for r in conn.execute(
                text("SELECT task, attempt FROM effects WHERE batch_id = :b"), params
            )
        )
        fanin = {r["name"]: dict(r) for r in conn.execute(text(_FANIN), params).mappings().all()}
        outbox = conn.execute(text(_OUTBOX), params).mappings().all()
    return Tally(
        tasks={r["name"]: dict(r) for r in log_rows},
        attempts=attempts,
        effects=effects,
        fanin=fanin,
        parents={n: r.parents for n, r in defined.items()},
        rows_per_task=Counter(r["name"] for r in log_rows),
        creating_messages={r["name"]: r["creating"] for r in outbox},
        messages={r["name"]: r["total"] for r in outbox},
        defined=set(defined),
    )


_DEFINED = """
SELECT t.name, count(d.parent_task_id) AS parents
FROM tasks t LEFT JOIN task_dependencies d ON d.child_task_id = t.task_id
WHERE t.pipeline = :p GROUP BY t.name
"""
_TASK_LOG = """
SELECT t.name, tl.log_id, tl.status::text AS status, tl.attempt, tl.created_at, t.params
FROM task_log tl JOIN tasks t ON t.task_id = tl.task_id
WHERE tl.pipeline = :p AND tl.batch_id = :b
"""
_ATTEMPTS = """
SELECT t.name, a.attempt, a.outcome::text AS outcome, a.error, a.worker
FROM task_attempts a JOIN task_log tl ON tl.log_id = a.log_id
JOIN tasks t ON t.task_id = tl.task_id
WHERE tl.pipeline = :p AND tl.batch_id = :b ORDER BY t.name, a.attempt
"""
_FANIN = """
SELECT t.name, f.parents, f.succeeded, f.failed, f.skipped
FROM task_fanin f JOIN tasks t ON t.task_id = f.task_id
WHERE f.pipeline = :p AND f.batch_id = :b
"""
# The run_task row written in the same statement as the task_log row has the same created_at
# (both are the statement's :now); retries and requeues are written later.
_OUTBOX = """
SELECT t.name,
       count(*) FILTER (WHERE o.created_at = tl.created_at) AS creating,
       count(*) AS total
FROM task_log tl JOIN tasks t ON t.task_id = tl.task_id
JOIN outbox o ON o.log_id = tl.log_id AND o.payload->>'action' = 'run_task'
WHERE tl.pipeline = :p AND tl.batch_id = :b
GROUP BY t.name
"""


class Duplicator:
    """Watches the events topic through a pull subscription of its own and publishes every
    run_task the engine sends 1-2 more times, each copy held back 0-2 pull rounds and each
    round's copies in a shuffled order (seeded)."""

    def __init__(self, info: StackInfo, seed: int) -> None:
        from google.cloud import pubsub_v1  # noqa: PLC0415 - the router does not need it

        self.rng = random.Random(seed)
        self.subscriber = pubsub_v1.SubscriberClient()
        self.publisher = pubsub_v1.PublisherClient()
        self.topic = self.publisher.topic_path(info.project_id, info.events_topic)
        self.path = self.subscriber.subscription_path(info.project_id, f"{info.events_topic}-dup")
        self.subscriber.create_subscription(
            request={"name": self.path, "topic": self.topic, "ack_deadline_seconds": 60}
        )
        self.held: list[tuple[int, bytes]] = []  # (rounds to wait, data)
        self.seen = 0
        self.copies = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="duplicator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; publish what is still held (late duplicates) first."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._release(everything=True)
        self.subscriber.delete_subscription(request={"subscription": self.path})
        self.subscriber.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.path, "max_messages": 100}, timeout=1
                )
            except (DeadlineExceeded, ServiceUnavailable):
                response = None
            received = response.received_messages if response else []
            for item in received:
                message = item.message
                if message.attributes.get("action") == "run_task" and "dup" not in (
                    message.attributes
                ):
                    self.seen += 1
                    for _ in range(self.rng.choice((1, 2))):
                        self.held.append((self.rng.randint(0, 2), message.data))
            if received:
                self.subscriber.acknowledge(
                    request={"subscription": self.path, "ack_ids": [r.ack_id for r in received]}
                )
            self._release()

    def _release(self, *, everything: bool = False) -> None:
        due = [d for w, d in self.held if everything or w == 0]
        self.held = [] if everything else [(w - 1, d) for w, d in self.held if w > 0]
        self.rng.shuffle(due)
        futures = [self.publisher.publish(self.topic, d, action="run_task", dup="1") for d in due]
        for future in futures:
            future.result(timeout=30)
        self.copies += len(due)
