"""Deadlines: a batch deadline (``pipelines.deadline``) and task deadlines (``tasks.deadline``,
pinned in ``version_tasks.deadline``), and the ``deadline_misses`` ledger.

A deadline is ``{"within_s": N, "after": "scheduled" | "start"}`` (a task's also ``"fail"``):
N seconds after the batch's scheduled time (``params.scheduled_for``; a batch that was not
scheduled counts from its start) or after its start. The sweeper records a deadline missed
once per batch and task (the row's key; the batch's own has ``task = ''``), with its one alert
in the same statement, and fails a task whose deadline says so (ARCHITECTURE.md, "Deadlines").

- ``pipelines.deadline`` is read when the sweeper checks, like the schedule (an operating
  expectation, not part of what a batch runs); ``pipelines.description`` becomes nullable, as
  a pipeline may have a deadline and no description.
- ``tasks.deadline`` is part of the version: the snapshot (``dagrelay_pipeline_version``) holds
  it and hashes it only when set, so a pipeline without deadlines keeps its version. The edits
  are made on the function's current text (``pg_get_functiondef``), each spot counted.

Existing rows are kept: no deadline anywhere. The downgrade drops the ledger and the columns
(and a pipelines row kept only for its deadline) and makes the reverse edits.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

DEADLINE_CHECK = (
    "jsonb_typeof({col}) = 'object' AND ({col} ->> 'within_s') ~ '^[0-9]{{1,9}}$'"
    " AND ({col} ->> 'within_s')::integer > 0"
    " AND coalesce({col} ->> 'after', 'scheduled') IN ('scheduled', 'start')"
)

UPGRADE = [
    "ALTER TABLE pipelines ALTER COLUMN description DROP NOT NULL",
    "ALTER TABLE pipelines ADD COLUMN deadline jsonb",
    "ALTER TABLE pipelines ADD CONSTRAINT pipelines_deadline_shape CHECK ("
    + DEADLINE_CHECK.format(col="deadline")
    + ")",
    "ALTER TABLE tasks ADD COLUMN deadline jsonb",
    "ALTER TABLE tasks ADD CONSTRAINT tasks_deadline_shape CHECK ("
    + DEADLINE_CHECK.format(col="deadline")
    + ")",
    "ALTER TABLE version_tasks ADD COLUMN deadline jsonb",
    """CREATE TABLE deadline_misses (
        miss_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        pipeline    text NOT NULL,
        batch_id    text NOT NULL,
        task        text NOT NULL DEFAULT '',
        deadline_at timestamptz NOT NULL,
        missed_at   timestamptz NOT NULL,
        ended_at    timestamptz,
        fail        boolean NOT NULL DEFAULT false,
        failed_at   timestamptz,
        CONSTRAINT deadline_misses_once UNIQUE (pipeline, batch_id, task),
        FOREIGN KEY (pipeline, batch_id) REFERENCES batches (pipeline, batch_id)
            ON DELETE CASCADE
    )""",
    """CREATE INDEX deadline_misses_to_fail_idx ON deadline_misses (missed_at)
       WHERE fail AND failed_at IS NULL""",
    # The sweeper's window: running batches and those finished lately.
    "CREATE INDEX batches_finished_at_idx ON batches (finished_at)",
]

DOWNGRADE = [
    "DROP INDEX batches_finished_at_idx",
    "DROP TABLE deadline_misses",
    "ALTER TABLE version_tasks DROP COLUMN deadline",
    "ALTER TABLE tasks DROP COLUMN deadline",
    "DELETE FROM pipelines WHERE description IS NULL",
    "ALTER TABLE pipelines DROP COLUMN deadline",
    "ALTER TABLE pipelines ALTER COLUMN description SET NOT NULL",
]

# The snapshot of the live tasks: the deadline is hashed only when set, and copied.
PIN_EDITS = [
    (
        "'max_active', t.max_active))",
        "'max_active', t.max_active,\n                          'deadline', t.deadline))",
        1,
    ),
    ("map, teardown, updates)\n", "map, teardown, updates, deadline)\n", 1),
    ("coalesce(s.updates, '{}')\n", "coalesce(s.updates, '{}'), s.deadline\n", 1),
    ("teardown boolean, updates text[]);", "teardown boolean, updates text[], deadline jsonb);", 1),
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)
    _edit("dagrelay_pipeline_version", PIN_EDITS)


def downgrade() -> None:
    _edit("dagrelay_pipeline_version", [(after, before, n) for before, after, n in PIN_EDITS])
    for statement in DOWNGRADE:
        op.execute(statement)


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
