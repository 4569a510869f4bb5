"""Attempt history that outlives a rerun: task_attempts names its batch and task itself, and a
task_log row can be removed (and made again) by a rerun without losing its attempts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = [
    "ALTER TABLE task_attempts ADD COLUMN batch_id text",
    "ALTER TABLE task_attempts ADD COLUMN task_id integer REFERENCES tasks (task_id)",
    """UPDATE task_attempts a SET batch_id = tl.batch_id, task_id = tl.task_id
       FROM task_log tl WHERE tl.log_id = a.log_id""",
    "ALTER TABLE task_attempts ALTER COLUMN batch_id SET NOT NULL",
    "ALTER TABLE task_attempts ALTER COLUMN task_id SET NOT NULL",
    "ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_pkey",
    "ALTER TABLE task_attempts ADD COLUMN attempt_id bigint GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE task_attempts ADD PRIMARY KEY (attempt_id)",
    "ALTER TABLE task_attempts ALTER COLUMN log_id DROP NOT NULL",
    "ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_log_attempt_key UNIQUE (log_id, attempt)",
    "ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_log_id_fkey",
    """ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_log_id_fkey
       FOREIGN KEY (log_id) REFERENCES task_log (log_id) ON DELETE SET NULL""",
    "CREATE INDEX task_attempts_batch_task_idx ON task_attempts (batch_id, task_id)",
    "ALTER TABLE task_log DROP CONSTRAINT task_log_root_cause_log_id_fkey",
    """ALTER TABLE task_log ADD CONSTRAINT task_log_root_cause_log_id_fkey
       FOREIGN KEY (root_cause_log_id) REFERENCES task_log (log_id) ON DELETE SET NULL""",
    # Sent messages (and alerts) stay in the outbox when a rerun replaces their task's row.
    "ALTER TABLE outbox DROP CONSTRAINT outbox_log_id_fkey",
    """ALTER TABLE outbox ADD CONSTRAINT outbox_log_id_fkey
       FOREIGN KEY (log_id) REFERENCES task_log (log_id) ON DELETE SET NULL""",
]

DOWNGRADE = [
    "ALTER TABLE outbox DROP CONSTRAINT outbox_log_id_fkey",
    """ALTER TABLE outbox ADD CONSTRAINT outbox_log_id_fkey
       FOREIGN KEY (log_id) REFERENCES task_log (log_id) ON DELETE CASCADE""",
    "ALTER TABLE task_log DROP CONSTRAINT task_log_root_cause_log_id_fkey",
    """ALTER TABLE task_log ADD CONSTRAINT task_log_root_cause_log_id_fkey
       FOREIGN KEY (root_cause_log_id) REFERENCES task_log (log_id)""",
    "DROP INDEX task_attempts_batch_task_idx",
    # Attempts of rows a rerun removed have no row to belong to any more.
    "DELETE FROM task_attempts WHERE log_id IS NULL",
    "ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_log_id_fkey",
    """ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_log_id_fkey
       FOREIGN KEY (log_id) REFERENCES task_log (log_id) ON DELETE CASCADE""",
    "ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_log_attempt_key",
    "ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_pkey",
    "ALTER TABLE task_attempts DROP COLUMN attempt_id",
    "ALTER TABLE task_attempts ALTER COLUMN log_id SET NOT NULL",
    "ALTER TABLE task_attempts ADD PRIMARY KEY (log_id, attempt)",
    "ALTER TABLE task_attempts DROP COLUMN task_id",
    "ALTER TABLE task_attempts DROP COLUMN batch_id",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
