"""Priority with aging in pools, ``max_active`` and ``max_parallel`` queues: a queued task is
never passed forever by a stream of higher-priority work.

A queued task's effective priority grows by one for every ``AGING_S`` (60) seconds it waits:
``priority + waited / 60``. Two tasks age at the same rate, so their order does not change with
time and is one key: ``queued_at - priority * 60 s`` (``dagrelay_queue_key``), earliest first,
then the row's id. Guarantee: a task queued at t is passed only by tasks queued before
t + (their priority - its priority) * 60 s; every task queued later waits behind it. The claim
(``dagrelay_claim_limited``: the tasks ahead of a claim), the releases
(``dagrelay_release_pool``, ``dagrelay_release_slots``: the head of a queue) and the queue
indexes use the key; nothing else changes (the same statements per completion).

The edits are made on each function's current text (``pg_get_functiondef``), so they keep
whatever earlier revisions put around them (0015's teardown claim, 0016's fenced writes); each
edited spot must occur exactly as often as expected, or the migration stops. The downgrade
makes the reverse edits and restores the former indexes; rows are untouched both ways (a
queue's order is computed, never stored).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

AGING_S = 60  # seconds of waiting worth one point of priority

# A queued task's place in its queue, earliest first (then log_id): when it was queued (in UTC),
# moved earlier by AGING_S seconds per point of priority. Every operation in it is immutable, so
# PostgreSQL inlines it into the queries (no call per row) and it can key the queue indexes.
QUEUE_KEY = f"""
CREATE FUNCTION dagrelay_queue_key(p_queued_at timestamptz, p_priority integer)
RETURNS timestamp LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (p_queued_at AT TIME ZONE 'UTC')
           - make_interval(secs => p_priority::double precision * {AGING_S})
$$
"""

BY_PRIORITY = "ORDER BY q.priority DESC, q.queued_at, q.log_id"
BY_KEY = "ORDER BY dagrelay_queue_key(q.queued_at, q.priority), q.log_id"
AHEAD_BY_PRIORITY = (
    "AND (q.priority > r.priority\n"
    "               OR (q.priority = r.priority AND (q.queued_at, q.log_id) < (r.since, r.id)));"
)
AHEAD_BY_KEY = (
    "AND (dagrelay_queue_key(q.queued_at, q.priority), q.log_id)\n"
    "              < (dagrelay_queue_key(r.since, r.priority), r.id);"
)
WANTED_BY_PRIORITY = (
    "SELECT q.log_id, q.priority, q.queued_at,\n"
    "                   sum(q.pool_slots) OVER (ORDER BY q.priority DESC, q.queued_at, q.log_id)\n"
    "                       AS wanted"
)
WANTED_BY_KEY = (
    "SELECT q.log_id, dagrelay_queue_key(q.queued_at, q.priority) AS queue_key,\n"
    "                   sum(q.pool_slots) OVER (\n"
    "                       ORDER BY dagrelay_queue_key(q.queued_at, q.priority), q.log_id) AS wanted"
)
HEAD_BY_PRIORITY = "ORDER BY h.priority DESC, h.queued_at, h.log_id"
HEAD_BY_KEY = "ORDER BY h.queue_key, h.log_id"

# (function, [(before, after, how many times)]): applied in this order on upgrade, and each
# swapped in the same order on downgrade (a longer edit comes before one it contains).
EDITS: list[tuple[str, list[tuple[str, str, int]]]] = [
    ("dagrelay_claim_limited", [(AHEAD_BY_PRIORITY, AHEAD_BY_KEY, 3)]),
    (
        "dagrelay_release_pool",
        [
            (WANTED_BY_PRIORITY, WANTED_BY_KEY, 1),
            (BY_PRIORITY, BY_KEY, 1),
            (HEAD_BY_PRIORITY, HEAD_BY_KEY, 1),
        ],
    ),
    ("dagrelay_release_slots", [(BY_PRIORITY, BY_KEY, 2)]),
]

INDEXES = [
    "DROP INDEX task_log_pool_queue_idx",
    "DROP INDEX task_log_task_queue_idx",
    """CREATE INDEX task_log_pool_queue_idx
       ON task_log (pool, dagrelay_queue_key(queued_at, priority), log_id)
       WHERE queued_at IS NOT NULL""",
    """CREATE INDEX task_log_task_queue_idx
       ON task_log (task_id, dagrelay_queue_key(queued_at, priority), log_id)
       WHERE queued_at IS NOT NULL""",
]

FORMER_INDEXES = [
    "DROP INDEX task_log_pool_queue_idx",
    "DROP INDEX task_log_task_queue_idx",
    """CREATE INDEX task_log_pool_queue_idx ON task_log (pool, priority DESC, queued_at, log_id)
       WHERE queued_at IS NOT NULL""",
    """CREATE INDEX task_log_task_queue_idx ON task_log (task_id, priority DESC, queued_at, log_id)
       WHERE queued_at IS NOT NULL""",
]


def upgrade() -> None:
    op.execute(QUEUE_KEY)
    for function, edits in EDITS:
        _edit(function, edits)
    for statement in INDEXES:
        op.execute(statement)


def downgrade() -> None:
    for statement in FORMER_INDEXES:
        op.execute(statement)
    for function, edits in reversed(EDITS):
        _edit(function, [(after, before, n) for before, after, n in edits])
    op.execute("DROP FUNCTION dagrelay_queue_key(timestamptz, integer)")


def _edit(function: str, edits: list[tuple[str, str, int]]) -> None:
    """Re-create ``function`` from its current definition with ``edits`` made; each ``before``
    must occur exactly its count of times."""
    conn = op.get_bind()
    definition = conn.execute(
        text("SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname = :name"),
        {"name": function},
    ).scalar_one()
    for before, after, count in edits:
        found = definition.count(before)
        if found != count:
            raise RuntimeError(f"{function}: expected {count} of {before!r}, found {found}")
        definition = definition.replace(before, after)
    conn.exec_driver_sql(definition)
