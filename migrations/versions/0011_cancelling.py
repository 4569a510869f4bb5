"""Cancel means something exact, and descriptions are kept.

- ``batch_status`` gains ``CANCELLING``: a cancelled batch whose attempts still run; it becomes
  ``CANCELLED`` (with its finish time) when the last one ends. Existing rows keep their status.
  The downgrade maps ``CANCELLING`` to ``CANCELLED`` and rebuilds the type without it (the
  functions that take or return it are dropped and created again from their own definitions).
- ``tasks.description`` and ``pipelines`` (a pipeline's description): what a pipeline file says
  about itself, written by ``pipeline apply`` and read back by ``pipeline export``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_VALUES = "'RUNNING', 'SUCCESS', 'FAILED', 'CANCELLED'"

UPGRADE = [
    # A value added in a transaction cannot be used in it; nothing below uses it.
    "ALTER TYPE batch_status ADD VALUE IF NOT EXISTS 'CANCELLING' AFTER 'RUNNING'",
    "ALTER TABLE tasks ADD COLUMN description text",
    r"""CREATE TABLE pipelines (
        pipeline    text PRIMARY KEY,
        description text NOT NULL,
        CONSTRAINT pipelines_pipeline_format CHECK (pipeline ~ '^[A-Za-z][A-Za-z0-9_.-]{0,127}$')
    )""",
]

# The functions whose signature names batch_status, with their definitions (recreated as they
# are, whichever revision last defined them).
FUNCTIONS_USING_THE_TYPE = """
SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition
FROM pg_proc p
WHERE p.prorettype = 'batch_status'::regtype
   OR 'batch_status'::regtype = ANY (p.proargtypes::oid[])
ORDER BY p.oid
"""


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    conn = op.get_bind()
    op.execute("DROP TABLE pipelines")
    op.execute("ALTER TABLE tasks DROP COLUMN description")
    op.execute(
        "UPDATE batches SET status = 'CANCELLED', finished_at = coalesce(finished_at, now()) "
        "WHERE status = 'CANCELLING'"
    )
    functions = conn.execute(text(FUNCTIONS_USING_THE_TYPE)).all()
    for function in functions:
        op.execute(f"DROP FUNCTION {function.signature}")
    op.execute("ALTER TYPE batch_status RENAME TO batch_status_0011")
    op.execute(f"CREATE TYPE batch_status AS ENUM ({OLD_VALUES})")
    op.execute(
        "ALTER TABLE batches ALTER COLUMN status DROP DEFAULT, "
        "ALTER COLUMN status TYPE batch_status USING status::text::batch_status, "
        "ALTER COLUMN status SET DEFAULT 'RUNNING'"
    )
    op.execute("DROP TYPE batch_status_0011")
    for function in functions:
        op.execute(function.definition)
