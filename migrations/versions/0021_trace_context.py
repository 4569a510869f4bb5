"""Each batch's trace context: ``batches.trace_context``, the W3C ``traceparent`` of the batch's
root span, written once when the batch starts with tracing on (NULL otherwise, and for every
batch that existed before). The outbox relay copies it into the ``traceparent`` attribute of the
batch's messages, so every attempt of the batch is a span of one trace (ARCHITECTURE.md,
"Tracing and metrics"). A nullable column without a default: existing rows are untouched and the
upgrade rewrites no table. The downgrade drops the column (the contexts are only trace links).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE batches ADD COLUMN trace_context text"
        " CONSTRAINT batches_trace_context_format"
        " CHECK (trace_context ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$')"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE batches DROP COLUMN trace_context")
