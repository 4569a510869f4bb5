"""Signals: an external event a signal sensor waits for (ARCHITECTURE.md, "Sensors").

A ``signal`` message (key, optional payload) becomes one ``signals`` row. ``dedupe_id`` (the
message's ``signal_id``, else its Pub/Sub message id) is unique, so a duplicate delivery records
nothing twice. ``signals_key_idx`` finds a key's signals in time order (a sensor's poll); the
partial index ``task_log_waiting_signal_idx`` finds the attempts waiting for a key (a signal
wakes them), one index entry per waiting sensor and none for any other row.

No function changes; the downgrade drops the table and the index (the signals recorded go with
them; task_log keeps its rows).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

UPGRADE = [
    r"""CREATE TABLE signals (
        signal_id    bigserial PRIMARY KEY,
        key          text NOT NULL
                     CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9_.:/@=+-]{0,199}$'),
        payload      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
        dedupe_id    text UNIQUE CHECK (length(dedupe_id) BETWEEN 1 AND 200),
        triggered_by text,
        received_at  timestamptz NOT NULL
    )""",
    "CREATE INDEX signals_key_idx ON signals (key, received_at, signal_id)",
    """CREATE INDEX task_log_waiting_signal_idx ON task_log ((job ->> 'signal_key'))
       WHERE job ? 'signal_key'""",
]

DOWNGRADE = [
    "DROP INDEX task_log_waiting_signal_idx",
    "DROP TABLE signals",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
