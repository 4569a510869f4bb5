"""Schedules that recur: one row per scheduled pipeline, evaluated by the sweep.

A due tick starts its batch and advances ``next_run_at`` in one transaction, fenced by a checked
write on ``next_run_at`` (dagrelay.engine.schedules). Rows may be written with plain SQL: every
column but ``pipeline`` and ``cron`` has a default, ``next_run_at`` NULL is computed at the next
sweep, and changing ``cron`` or ``timezone`` resets it.

Revision ID: 0009
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = [
    # A CHECK may call a function; this one asks the server whether it knows the zone.
    r"""CREATE FUNCTION dagrelay_is_timezone(p_name text) RETURNS boolean
       LANGUAGE plpgsql STABLE AS $$
       BEGIN
           PERFORM now() AT TIME ZONE p_name;
           RETURN true;
       EXCEPTION WHEN invalid_parameter_value THEN
           RETURN false;
       END $$""",
    r"""CREATE TABLE schedules (
        pipeline           text PRIMARY KEY,
        cron               text NOT NULL,
        timezone           text NOT NULL DEFAULT 'Etc/UTC',
        batch_id_template  text NOT NULL DEFAULT '{scheduled_for:%Y-%m-%dT%H:%M}',
        catchup            text NOT NULL DEFAULT 'latest',
        catchup_limit      integer NOT NULL DEFAULT 10,
        max_active_batches integer NOT NULL DEFAULT 1,
        overlap            text NOT NULL DEFAULT 'skip',
        paused             boolean NOT NULL DEFAULT false,
        next_run_at        timestamptz,
        last_tick_at       timestamptz,
        last_run_at        timestamptz,
        last_batch_id      text,
        last_error         text,
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT schedules_pipeline_format CHECK (pipeline ~ '^[A-Za-z][A-Za-z0-9_.-]{0,127}$'),
        CONSTRAINT schedules_cron_five_fields CHECK (
            cron ~ '^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$'
            OR cron ~ '^\s*\S+\s+\S+\s+\S+\s+\S+\s+\S+\s*$'),
        CONSTRAINT schedules_timezone_known CHECK (dagrelay_is_timezone(timezone)),
        CONSTRAINT schedules_template_length CHECK (length(batch_id_template) BETWEEN 1 AND 200),
        CONSTRAINT schedules_catchup_valid CHECK (catchup IN ('all', 'latest')),
        CONSTRAINT schedules_catchup_limit_range CHECK (catchup_limit BETWEEN 1 AND 1000),
        CONSTRAINT schedules_max_active_positive CHECK (max_active_batches >= 1),
        CONSTRAINT schedules_overlap_valid CHECK (overlap IN ('skip', 'wait'))
    )""",
    "CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE NOT paused",
    # A new cron or zone makes the stored next tick meaningless: the next sweep computes it.
    """CREATE FUNCTION dagrelay_schedule_reset() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
           IF (NEW.cron, NEW.timezone) IS DISTINCT FROM (OLD.cron, OLD.timezone)
              AND NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at THEN
               NEW.next_run_at := NULL;
           END IF;
           RETURN NEW;
       END $$""",
    """CREATE TRIGGER schedules_reset_next_run BEFORE UPDATE ON schedules
       FOR EACH ROW EXECUTE FUNCTION dagrelay_schedule_reset()""",
]

DOWNGRADE = [
    "DROP TRIGGER schedules_reset_next_run ON schedules",
    "DROP FUNCTION dagrelay_schedule_reset()",
    "DROP TABLE schedules",
    "DROP FUNCTION dagrelay_is_timezone(text)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
