"""Teardown tasks: ``tasks.teardown`` and ``version_tasks.teardown`` (boolean, default false).

A teardown task runs once its parents are done whatever their outcome (its trigger rule is
``all_done``), also in a batch being cancelled: a cancel spares the teardown tasks that have
not run, the batch stays CANCELLING until they end, then it is CANCELLED (ARCHITECTURE.md,
"Cancel, resume, teardown"). The engine's functions learn the flag:

- the version snapshot holds it (and hashes it only when true, so a pipeline without teardown
  tasks keeps its version);
- the fan-in counts a CANCELLED parent as done (failed) and, in a CANCELLING batch, creates its
  teardown children (and only those);
- the limited claim takes a teardown task's row in a CANCELLING batch.

Existing rows are kept: every task gets ``teardown = false``. The downgrade cancels the rows of
CANCELLING batches that are waiting to run (the old claim would never take them: the sweeper
then finishes those batches), restores the functions of 0012/0013/0014 and drops the columns.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _revision(file: str) -> ModuleType:
    """An earlier revision, whose functions this one edits (and its downgrade puts back)."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"dagrelay_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edit(text: str, edits: list[tuple[str, str]]) -> str:
    """``text`` with each (old, new) replaced; an old string that is not there exactly once is
    an error (a change to the revision edited must not go unnoticed)."""
    for old, new in edits:
        if text.count(old) != 1:
            raise ValueError(f"migration 0015: expected one {old!r} in the function it edits")
        text = text.replace(old, new)
    return text


V12 = _revision("0012_map.py")
V13 = _revision("0013_pools.py")
V14 = _revision("0014_map_parallel.py")

COLUMNS = [
    "ALTER TABLE tasks ADD COLUMN teardown boolean NOT NULL DEFAULT false",
    "ALTER TABLE version_tasks ADD COLUMN teardown boolean NOT NULL DEFAULT false",
]

# 0013's snapshot with the flag (hashed only when true).
PIN_FUNCTION = _edit(
    V13.PIN_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1),
    [
        (
            "ELSE jsonb_build_object('map', t.map) END\n",
            (
                "ELSE jsonb_build_object('map', t.map) END\n"
                "                      || CASE WHEN t.teardown THEN '{\"teardown\": true}'::jsonb\n"
                "                              ELSE '{}'::jsonb END\n"
            ),
        ),
        ("max_active, map)\n    SELECT", "max_active, map, teardown)\n    SELECT"),
        ("s.max_active, s.map\n", "s.max_active, s.map, coalesce(s.teardown, false)\n"),
        ("max_active integer, map jsonb);", "max_active integer, map jsonb, teardown boolean);"),
    ],
)

# 0012's fan-in: a CANCELLED parent counts as done (failed), and a CANCELLING batch gets its
# teardown children (and only those).
ADVANCE_CHILDREN = _edit(
    V12.ADVANCE_CHILDREN,
    [
        (
            (
                "SELECT 1 FROM batches\n"
                "            WHERE pipeline = p_pipeline AND batch_id = p_batch_id AND status = 'RUNNING'\n"
            ),
            (
                "SELECT status = 'RUNNING' AS running FROM batches\n"
                "            WHERE pipeline = p_pipeline AND batch_id = p_batch_id\n"
                "              AND status IN ('RUNNING', 'CANCELLING')\n"
            ),
        ),
        (
            "count(*) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED')) AS failed",
            (
                "count(*) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED', 'CANCELLED'))\n"
                "                       AS failed"
            ),
        ),
        (
            "SELECT c.pipeline, c.task_id, t.name, t.enabled, t.map,",
            "SELECT c.pipeline, c.task_id, t.name, t.enabled, t.map, t.teardown,",
        ),
        (
            "WHERE d.decision IS NOT NULL AND EXISTS (SELECT 1 FROM batch_running)",
            (
                "WHERE d.decision IS NOT NULL\n"
                "              AND EXISTS (SELECT 1 FROM batch_running r WHERE r.running OR d.teardown)"
            ),
        ),
    ],
)

# 0014's limited claim: a teardown task's row is claimed in a CANCELLING batch too.
CLAIM_LIMITED = _edit(
    V14.CLAIM_LIMITED,
    [
        (
            "WHERE b.pipeline = p_pipeline AND b.batch_id = p_batch_id AND b.status = 'RUNNING'\n",
            (
                "WHERE b.pipeline = p_pipeline AND b.batch_id = p_batch_id\n"
                "      AND (b.status = 'RUNNING' OR (b.status = 'CANCELLING' AND t.teardown))\n"
            ),
        )
    ],
)


def upgrade() -> None:
    for statement in (*COLUMNS, PIN_FUNCTION, ADVANCE_CHILDREN, CLAIM_LIMITED):
        op.execute(statement)


# Rows waiting to run in a CANCELLING batch (teardown tasks): the old claim never takes them.
CANCEL_WAITING = """
UPDATE task_log tl SET status = 'CANCELLED', finished_at = now(), next_attempt_at = NULL,
                       queued_at = NULL
FROM batches b
WHERE b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id AND b.status = 'CANCELLING'
  AND tl.status IN ('NEW', 'QUEUED', 'RETRY')
"""


def downgrade() -> None:
    op.execute(CANCEL_WAITING)
    op.execute(V14.CLAIM_LIMITED)
    op.execute(V12.ADVANCE_CHILDREN)
    op.execute("DROP FUNCTION dagrelay_pipeline_version(text, timestamptz)")
    op.execute(V13.PIN_FUNCTION)
    op.execute("ALTER TABLE version_tasks DROP COLUMN teardown")
    op.execute("ALTER TABLE tasks DROP COLUMN teardown")
