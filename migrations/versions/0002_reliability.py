"""Reliability: delayed outbox rows (retries), the task each message is for, dead letters, and a
traceback summary per attempt.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = [
    # A retry's run_task waits in the outbox until its next_attempt_at: the database, not
    # Pub/Sub's redelivery timing, decides when a task runs again.
    "ALTER TABLE outbox ADD COLUMN available_at timestamptz NOT NULL DEFAULT now()",
    # Which task_log row a run_task message is for, so the sweeper can tell a task whose
    # message was lost (emulator restart, ...) from one whose message is on its way.
    "ALTER TABLE outbox ADD COLUMN log_id bigint REFERENCES task_log (log_id) ON DELETE CASCADE",
    "CREATE INDEX outbox_log_idx ON outbox (log_id, created_at DESC) WHERE log_id IS NOT NULL",
    "DROP INDEX outbox_unpublished_idx",
    "CREATE INDEX outbox_unpublished_idx ON outbox (available_at) WHERE published_at IS NULL",
    "ALTER TABLE task_attempts ADD COLUMN traceback text",
    """
    CREATE TABLE dead_letters (
        dead_letter_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id        text,
        received_at       timestamptz NOT NULL DEFAULT now(),
        source_subscription text,
        delivery_attempts integer,
        action            text,
        pipeline          text,
        batch_id          text,
        task              text,
        attributes        jsonb NOT NULL DEFAULT '{}',
        data              text,
        reason            text NOT NULL,
        CONSTRAINT dead_letters_message_id_key UNIQUE (message_id)
    )
    """,
    "CREATE INDEX dead_letters_batch_idx ON dead_letters (batch_id)",
]

DOWNGRADE = [
    "DROP TABLE dead_letters",
    "ALTER TABLE task_attempts DROP COLUMN traceback",
    "DROP INDEX outbox_unpublished_idx",
    "DROP INDEX outbox_log_idx",
    "ALTER TABLE outbox DROP COLUMN log_id",
    "ALTER TABLE outbox DROP COLUMN available_at",
    "CREATE INDEX outbox_unpublished_idx ON outbox (created_at) WHERE published_at IS NULL",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
