"""Ingestion on the engine: file_log records the ingestion batch of each file, the one BigQuery
load job allowed to load it, and a DUPLICATE status (the same content was already loaded for
its source, and this file points at it). Existing rows are kept as they are.

Revision ID: 0008
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = [
    # Allowed in a transaction since PostgreSQL 12; nothing below uses the new value.
    "ALTER TYPE file_status ADD VALUE IF NOT EXISTS 'DUPLICATE'",
    "ALTER TABLE file_log ADD COLUMN batch_id text",
    "ALTER TABLE file_log ADD COLUMN load_job text",
    """ALTER TABLE file_log ADD COLUMN duplicate_of bigint
       CONSTRAINT file_log_duplicate_of_fkey REFERENCES file_log (file_id)""",
    # What the "already loaded?" decision reads: same content of a source, same object name.
    "CREATE INDEX file_log_content_idx ON file_log (source, md5)",
    "CREATE INDEX file_log_object_name_idx ON file_log (bucket, name)",
]

DOWNGRADE = [
    "DROP INDEX file_log_object_name_idx",
    "DROP INDEX file_log_content_idx",
    # A duplicate was never loaded: before this revision that could only be a rejection.
    """UPDATE file_log SET status = 'REJECTED',
           error = 'duplicate (same content as file ' || coalesce(duplicate_of::text, '?')
                   || ')' || coalesce(': ' || error, '')
       WHERE status = 'DUPLICATE'""",
    "ALTER TABLE file_log DROP COLUMN duplicate_of",
    "ALTER TABLE file_log DROP COLUMN load_job",
    "ALTER TABLE file_log DROP COLUMN batch_id",
    "ALTER TYPE file_status RENAME TO file_status_0008",
    "CREATE TYPE file_status AS ENUM ('RECEIVED', 'VALIDATED', 'LOADED', 'ARCHIVED', 'REJECTED')",
    "ALTER TABLE file_log ALTER COLUMN status DROP DEFAULT",
    "ALTER TABLE file_log ALTER COLUMN status TYPE file_status USING status::text::file_status",
    "ALTER TABLE file_log ALTER COLUMN status SET DEFAULT 'RECEIVED'",
    "DROP TYPE file_status_0008",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
