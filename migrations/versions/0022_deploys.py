"""The deploy step's record: ``deploys``, one row per function archive a deploy applied (its
hash, the schema revision it left, when, and what it applied). The deploy step
(``dagrelay.ops.deploy``; ARCHITECTURE.md, "Deploy") compares the newest row with the archive it
is asked for: the same archive again is a no-op, any other (a newer one, or a rollback to an
older one) is applied and recorded.

No existing row changes; the downgrade drops the table (its history with it).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""CREATE TABLE deploys (
            deploy_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            archive    text NOT NULL,
            revision   text NOT NULL,
            applied_at timestamptz NOT NULL,
            applied    jsonb NOT NULL DEFAULT '{}',
            CONSTRAINT deploys_archive_format CHECK (archive ~ '^[A-Za-z0-9_.-]{1,128}$'),
            CONSTRAINT deploys_applied_object CHECK (jsonb_typeof(applied) = 'object')
        )"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE deploys")
