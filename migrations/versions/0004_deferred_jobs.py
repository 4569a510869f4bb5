"""Deferred attempts: work that goes on outside the function (a BigQuery job) is kept on its
task_log row with the time of its next poll.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = [
    "ALTER TABLE task_log ADD COLUMN job jsonb",
    "ALTER TABLE task_log ADD COLUMN poll_at timestamptz",
    """ALTER TABLE task_log ADD CONSTRAINT task_log_job_only_while_processing
       CHECK (job IS NULL OR status = 'PROCESSING')""",
    "CREATE INDEX task_log_poll_idx ON task_log (poll_at) WHERE job IS NOT NULL",
    # What a handler receives as parent_outputs; used by the claim and by a poll.
    """CREATE FUNCTION dagrelay_parent_outputs(p_batch_id text, p_task_id integer)
       RETURNS jsonb LANGUAGE sql STABLE AS $$
           SELECT coalesce(jsonb_object_agg(pt.name, pl.output), '{}')
           FROM task_dependencies d
           JOIN tasks pt ON pt.task_id = d.parent_task_id
           JOIN task_log pl ON pl.batch_id = p_batch_id AND pl.task_id = d.parent_task_id
           WHERE d.child_task_id = p_task_id AND pl.output IS NOT NULL
       $$""",
]

DOWNGRADE = [
    "DROP FUNCTION dagrelay_parent_outputs(text, integer)",
    "DROP INDEX task_log_poll_idx",
    "ALTER TABLE task_log DROP CONSTRAINT task_log_job_only_while_processing",
    "ALTER TABLE task_log DROP COLUMN poll_at",
    "ALTER TABLE task_log DROP COLUMN job",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
