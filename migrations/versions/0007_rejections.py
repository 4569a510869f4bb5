"""Rejected and dead-lettered messages: bounded payloads, keyed so a reused id is never hidden.

A row keeps the first 65,536 characters of the message data as delivered, with the full size in
bytes and the sha256 of the whole. A message is one row per (message_id, payload_sha256): a
redelivery adds none, while a different message under a reused id (the emulator numbers ids from
1 again after a restart) is recorded instead of silently dropped. Existing rows get their size
and hash from their stored data, which is then cut to the bound.

Downgrade restores UNIQUE (message_id): of rows sharing an id only the first is kept.

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MAX_STORED_CHARS = 65_536
TABLES = {"rejected_messages": "rejected_id", "dead_letters": "dead_letter_id"}


def _upgrade(table: str) -> list[str]:
    return [
        f"ALTER TABLE {table} ADD COLUMN payload_bytes bigint, ADD COLUMN payload_sha256 text",
        f"""UPDATE {table}
            SET payload_bytes = octet_length(coalesce(data, '')),
                payload_sha256 = encode(sha256(convert_to(coalesce(data, ''), 'UTF8')), 'hex'),
                data = left(data, {MAX_STORED_CHARS})""",
        f"""ALTER TABLE {table}
            ALTER COLUMN payload_bytes SET NOT NULL,
            ALTER COLUMN payload_sha256 SET NOT NULL,
            DROP CONSTRAINT {table}_message_id_key,
            ADD CONSTRAINT {table}_message_key UNIQUE (message_id, payload_sha256),
            ADD CONSTRAINT {table}_payload_valid CHECK (
                payload_bytes >= 0 AND payload_sha256 ~ '^[0-9a-f]{{64}}$'
                AND length(data) <= {MAX_STORED_CHARS})""",
    ]


def _downgrade(table: str, key: str) -> list[str]:
    return [
        f"""DELETE FROM {table} later USING {table} first
            WHERE later.message_id = first.message_id AND later.{key} > first.{key}""",
        f"""ALTER TABLE {table}
            DROP CONSTRAINT {table}_payload_valid,
            DROP CONSTRAINT {table}_message_key,
            DROP COLUMN payload_sha256,
            DROP COLUMN payload_bytes,
            ADD CONSTRAINT {table}_message_id_key UNIQUE (message_id)""",
    ]


def upgrade() -> None:
    for table in TABLES:
        for statement in _upgrade(table):
            op.execute(statement)


def downgrade() -> None:
    for table, key in TABLES.items():
        for statement in _downgrade(table, key):
            op.execute(statement)
