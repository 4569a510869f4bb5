"""The two status writes of ``dagrelay_claim_limited`` become checked writes.

The claim locks the task's row ``FOR UPDATE`` with the status it read (``tl.status = r.st``)
and then wrote QUEUED or PROCESSING by ``log_id`` alone: correct under that lock, but the one
status UPDATE of the engine without a predicate on the current status (ARCHITECTURE.md,
invariant 1; tests/integration/test_sql_functions.py fences every function). Both UPDATEs now
say ``AND tl.status = r.st`` and return nothing when they did not land.

The edit is made on the function's current text (``pg_get_functiondef``), so it keeps whatever
an earlier revision put around it; each edited spot must occur exactly as often as expected, or
the migration stops. No table changes; the downgrade takes the two predicates out again.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from __future__ import annotations

import re

from alembic import op
from sqlalchemy import text

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

FUNCTION = "dagrelay_claim_limited(text, text, text, timestamptz, text, integer)"
# Both UPDATEs (QUEUED, PROCESSING) end with their last SET line and a WHERE by log_id.
UNFENCED = re.compile(r"(limited = true\n( *)WHERE tl\.log_id = r\.id);\n")
FENCED_TEXT = (
    r"\1 AND tl.status = r.st;\n"
    r"\2IF NOT FOUND THEN  -- the row changed after it was locked: not ours to write\n"
    r"\2    RETURN;\n"
    r"\2END IF;\n"
)
FENCED = re.compile(
    r"(limited = true\n( *)WHERE tl\.log_id = r\.id) AND tl\.status = r\.st;\n"
    r" *IF NOT FOUND THEN  -- [^\n]*\n *RETURN;\n *END IF;\n"
)
UNFENCED_TEXT = r"\1;\n"
EDITS = 2


def _edit(pattern: re.Pattern[str], replacement: str) -> None:
    conn = op.get_bind()
    definition = conn.execute(
        text("SELECT pg_get_functiondef(CAST(:f AS regprocedure))"), {"f": FUNCTION}
    ).scalar_one()
    edited, found = pattern.subn(replacement, definition)
    if found != EDITS:
        raise RuntimeError(f"{FUNCTION}: expected {EDITS} spots to edit, found {found}")
    conn.exec_driver_sql(edited)


def upgrade() -> None:
    _edit(UNFENCED, FENCED_TEXT)


def downgrade() -> None:
    _edit(FENCED, UNFENCED_TEXT)
