"""Pools and limits: named pools (``pools``: name, slots, description), and per task a pool,
the slots it takes (``pool_slots``), a ``priority`` and a ``max_active`` across batches, in the
live ``tasks`` and in the version snapshot (a batch keeps its version's pool settings).

A task that cannot get its slots waits in ``QUEUED`` (a new task_status value) with its place;
the transaction that frees a slot (an attempt's terminal write, or the sweeper's lease expiry)
writes the run_task message of the next waiting task (ARCHITECTURE.md, "Pools").
``task_log`` records, per row, the pool and slots its attempt holds (while PROCESSING) or waits
for (while QUEUED): the slot holders are counted from those rows, so a slot belongs to an
attempt and its lease and cannot leak.

Existing rows are kept: every pool name already used by a task gets a pools row with
``DEFAULT_SLOTS`` slots, so nothing that ran before waits after the upgrade.

The downgrade turns QUEUED rows back into NEW rows (the sweeper sends their message again) and
drops the new tables, columns and functions; the enum value QUEUED stays (PostgreSQL cannot
drop an enum value, and task_status is pinned by the engine's functions), unused.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

DEFAULT_SLOTS = 128  # a pool named by a task but never defined (also: dagrelay_claim_limited)

COLUMNS = [
    "ALTER TABLE tasks ADD COLUMN pool_slots integer NOT NULL DEFAULT 1",
    "ALTER TABLE tasks ADD COLUMN priority integer NOT NULL DEFAULT 0",
    "ALTER TABLE tasks ADD COLUMN max_active integer",
    "ALTER TABLE tasks ADD CONSTRAINT tasks_pool_slots_positive CHECK (pool_slots > 0)",
    "ALTER TABLE tasks ADD CONSTRAINT tasks_max_active_positive CHECK (max_active > 0)",
    "ALTER TABLE version_tasks ADD COLUMN pool_slots integer NOT NULL DEFAULT 1",
    "ALTER TABLE version_tasks ADD COLUMN priority integer NOT NULL DEFAULT 0",
    "ALTER TABLE version_tasks ADD COLUMN max_active integer",
    # The slot an attempt holds (PROCESSING) or waits for (QUEUED); limited: the row was
    # claimed through dagrelay_claim_limited, so its terminal write releases the next waiter.
    "ALTER TABLE task_log ADD COLUMN pool text",
    "ALTER TABLE task_log ADD COLUMN pool_slots integer",
    "ALTER TABLE task_log ADD COLUMN priority integer",
    "ALTER TABLE task_log ADD COLUMN queued_at timestamptz",
    "ALTER TABLE task_log ADD COLUMN limited boolean NOT NULL DEFAULT false",
]

TABLES = [
    """
    CREATE TABLE pools (
        name        text PRIMARY KEY,
        slots       integer NOT NULL,
        description text,
        updated_at  timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pools_slots_not_negative CHECK (slots >= 0),
        CONSTRAINT pools_name_not_empty CHECK (name <> '')
    )
    """,
    f"""
    INSERT INTO pools (name, slots, description)
    SELECT DISTINCT pool, {DEFAULT_SLOTS}, 'created by the upgrade to 0013 (a task names it)'
    FROM (SELECT pool FROM tasks UNION SELECT pool FROM version_tasks) p
    WHERE pool IS NOT NULL AND pool <> ''
    """,
    # Holders of a pool's slots, and of a task's max_active; the queue in order.
    """CREATE INDEX task_log_pool_holders_idx ON task_log (pool)
       WHERE limited AND status = 'PROCESSING'""",
    """CREATE INDEX task_log_task_holders_idx ON task_log (task_id)
       WHERE limited AND status = 'PROCESSING'""",
    """CREATE INDEX task_log_pool_queue_idx ON task_log (pool, priority DESC, queued_at, log_id)
       WHERE queued_at IS NOT NULL""",
    """CREATE INDEX task_log_task_queue_idx ON task_log (task_id, priority DESC, queued_at, log_id)
       WHERE queued_at IS NOT NULL""",
]


# 0010's snapshot with the pool settings. A setting at its default is left out of the hash, so a
# pipeline that uses none of them keeps the version it had before the upgrade.
PIN_FUNCTION = r"""
CREATE FUNCTION dagrelay_pipeline_version(p_pipeline text, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    live   jsonb;
    digest text;
    found  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('dagrelay.pipeline_versions'), hashtext(p_pipeline));
    SELECT jsonb_build_object(
        'tasks', (SELECT jsonb_agg(jsonb_build_object(
                      'name', t.name, 'handler', t.handler, 'params', t.params,
                      'trigger_rule', t.trigger_rule, 'max_retries', t.max_retries,
                      'retry_delay_s', t.retry_delay_s, 'retry_backoff', t.retry_backoff,
                      'retry_max_delay_s', t.retry_max_delay_s, 'timeout_s', t.timeout_s,
                      'pool', t.pool, 'enabled', t.enabled)
                      || jsonb_strip_nulls(jsonb_build_object(
                          'pool_slots', nullif(t.pool_slots, 1),
                          'priority', nullif(t.priority, 0),
                          'max_active', t.max_active))
                      || CASE WHEN t.map IS NULL THEN '{}'::jsonb
                              ELSE jsonb_build_object('map', t.map) END
                      ORDER BY t.name)
                  FROM tasks t WHERE t.pipeline = p_pipeline),
        'edges', coalesce((SELECT jsonb_agg(jsonb_build_array(p.name, c.name)
                                            ORDER BY c.name, p.name)
                           FROM task_dependencies d
                           JOIN tasks c ON c.task_id = d.child_task_id
                           JOIN tasks p ON p.task_id = d.parent_task_id
                           WHERE c.pipeline = p_pipeline), '[]'::jsonb),
        'ids', (SELECT jsonb_object_agg(t.name, t.task_id)
                FROM tasks t WHERE t.pipeline = p_pipeline))
    INTO live;
    IF live -> 'tasks' IS NULL OR jsonb_typeof(live -> 'tasks') = 'null' THEN
        RETURN NULL;
    END IF;
    digest := encode(sha256(convert_to((live - 'ids')::text, 'UTF8')), 'hex');
    SELECT version_id INTO found FROM pipeline_versions
    WHERE pipeline = p_pipeline AND content_hash = digest;
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    INSERT INTO pipeline_versions (pipeline, version, content_hash, created_at)
    SELECT p_pipeline, coalesce(max(v.version), 0) + 1, digest, p_now
    FROM pipeline_versions v WHERE v.pipeline = p_pipeline
    RETURNING version_id INTO found;
    INSERT INTO version_tasks (version_id, task_id, name, handler, params, trigger_rule,
                               max_retries, retry_delay_s, retry_backoff, retry_max_delay_s,
                               timeout_s, pool, enabled, pool_slots, priority, max_active, map)
    SELECT found, (live -> 'ids' ->> s.name)::integer, s.name, s.handler, s.params,
           s.trigger_rule, s.max_retries, s.retry_delay_s, s.retry_backoff,
           s.retry_max_delay_s, s.timeout_s, s.pool, s.enabled, coalesce(s.pool_slots, 1),
           coalesce(s.priority, 0), s.max_active, s.map
    FROM jsonb_to_recordset(live -> 'tasks') AS s(
        name text, handler text, params jsonb, trigger_rule trigger_rule, max_retries integer,
        retry_delay_s integer, retry_backoff double precision, retry_max_delay_s integer,
        timeout_s integer, pool text, enabled boolean, pool_slots integer, priority integer,
        max_active integer, map jsonb);
    INSERT INTO version_edges (version_id, child_task_id, parent_task_id)
    SELECT found, (live -> 'ids' ->> (e ->> 1))::integer, (live -> 'ids' ->> (e ->> 0))::integer
    FROM jsonb_array_elements(live -> 'edges') AS e;
    RETURN found;
END $$
"""

# 0010's batch outcome, with QUEUED open.
BATCH_OUTCOME = r"""
CREATE OR REPLACE FUNCTION dagrelay_batch_outcome(p_pipeline text, p_batch_id text)
RETURNS batch_status LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM task_log tl
               WHERE tl.batch_id = p_batch_id AND tl.pipeline = p_pipeline
                 AND tl.status IN ('NEW', 'QUEUED', 'PROCESSING', 'RETRY')) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM task_log tl
               WHERE tl.batch_id = p_batch_id AND tl.pipeline = p_pipeline
                 AND tl.status IN ('ERROR', 'UPSTREAM_FAILED') AND tl.map_index = -1) THEN
        RETURN 'FAILED';
    END IF;
    IF EXISTS (SELECT 1 FROM task_log tl
               WHERE tl.batch_id = p_batch_id AND tl.pipeline = p_pipeline
                 AND tl.status = 'CANCELLED') THEN
        RETURN 'CANCELLED';
    END IF;
    RETURN 'SUCCESS';
END
$$
"""

# The claim of a task with a pool or a max_active (claim_task takes the others, lock-free).
# Locks the pool's row (only that pool's), then the task's max_active scope, then the row; a
# task is claimed when its slots fit beside the slots held (PROCESSING rows of the pool) and
# the slots wanted by the tasks queued ahead of it (priority first, then first come); else it
# waits in QUEUED. Returns (log_id, status, ahead, and for a claim its attempt and lease), or
# nothing when the row is not claimable. (The caller's statement cannot see the row as this
# function changed it: what changed is returned.)
CLAIM_LIMITED = rf"""
CREATE FUNCTION dagrelay_claim_limited(
    p_pipeline text, p_batch_id text, p_task text, p_now timestamptz, p_worker text,
    p_map_index integer DEFAULT -1
) RETURNS TABLE (log_id bigint, status text, ahead integer, attempt integer,
                lease_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r       record;
    cap     integer;
    held    integer;
    wanted  integer;
    place   integer := 0;
    blocked boolean := false;
BEGIN
    SELECT tl.log_id AS id, tl.status AS st, coalesce(tl.queued_at, p_now) AS since,
           t.task_id, t.pool, t.pool_slots, t.priority, t.max_active, t.timeout_s
    INTO r
    FROM batches b
    JOIN version_tasks t ON t.version_id = b.version_id AND t.name = p_task
    JOIN task_log tl ON tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id
                    AND tl.task_id = t.task_id AND tl.map_index = p_map_index
    WHERE b.pipeline = p_pipeline AND b.batch_id = p_batch_id AND b.status = 'RUNNING'
      AND (t.pool IS NOT NULL OR t.max_active IS NOT NULL)
      AND (tl.status IN ('NEW', 'QUEUED')
           OR (tl.status = 'RETRY' AND tl.next_attempt_at <= p_now));
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.pool IS NOT NULL THEN
        INSERT INTO pools (name, slots, description)
        VALUES (r.pool, {DEFAULT_SLOTS}, 'created on first use') ON CONFLICT DO NOTHING;
        SELECT slots INTO cap FROM pools WHERE name = r.pool FOR UPDATE;
    END IF;
    IF r.max_active IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('dagrelay.max_active'), r.task_id);
    END IF;
    -- The row again, after the locks: a duplicate message may have claimed it meanwhile.
    PERFORM 1 FROM task_log tl WHERE tl.log_id = r.id AND tl.status = r.st FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.pool IS NOT NULL THEN
        SELECT coalesce(sum(h.pool_slots), 0) INTO held FROM task_log h
        WHERE h.limited AND h.status = 'PROCESSING' AND h.pool = r.pool;
        SELECT coalesce(sum(q.pool_slots), 0), count(*) INTO wanted, place FROM task_log q
        WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.pool = r.pool
          AND q.log_id <> r.id
          AND (q.priority > r.priority
               OR (q.priority = r.priority AND (q.queued_at, q.log_id) < (r.since, r.id)));
        blocked := held + wanted + r.pool_slots > cap;
    END IF;
    IF NOT blocked AND r.max_active IS NOT NULL THEN
        SELECT count(*) INTO held FROM task_log h
        WHERE h.limited AND h.status = 'PROCESSING' AND h.task_id = r.task_id;
        SELECT count(*) INTO wanted FROM task_log q
        WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.task_id = r.task_id
          AND q.log_id <> r.id
          AND (q.priority > r.priority
               OR (q.priority = r.priority AND (q.queued_at, q.log_id) < (r.since, r.id)));
        blocked := held + wanted + 1 > r.max_active;
        place := wanted;
    END IF;
    IF blocked THEN
        UPDATE task_log tl
        SET status = 'QUEUED', queued_at = r.since, pool = r.pool,
            pool_slots = CASE WHEN r.pool IS NOT NULL THEN r.pool_slots END,
            priority = r.priority, limited = true
        WHERE tl.log_id = r.id;
        RETURN QUERY SELECT r.id, 'QUEUED'::text, place, NULL::integer, NULL::timestamptz;
        RETURN;
    END IF;
    UPDATE task_log tl
    SET status = 'PROCESSING', attempt = tl.attempt + 1, started_at = p_now, finished_at = NULL,
        lease_expires_at = p_now + make_interval(secs => r.timeout_s), next_attempt_at = NULL,
        error = NULL, job = NULL, poll_at = NULL, queued_at = NULL, pool = r.pool,
        pool_slots = CASE WHEN r.pool IS NOT NULL THEN r.pool_slots END,
        priority = r.priority, limited = true
    WHERE tl.log_id = r.id;
    INSERT INTO task_attempts (log_id, batch_id, task_id, attempt, started_at, worker)
    SELECT tl.log_id, tl.batch_id, tl.task_id, tl.attempt, p_now, p_worker
    FROM task_log tl WHERE tl.log_id = r.id;
    RETURN QUERY SELECT tl.log_id, 'PROCESSING'::text, 0, tl.attempt, tl.lease_expires_at
                 FROM task_log tl WHERE tl.log_id = r.id;
END $$
"""

# The run_task messages of task_log rows, in the order given, written to the outbox.
SEND_RUN_TASKS = r"""
CREATE FUNCTION dagrelay_send_run_tasks(p_log_ids bigint[], p_topic text, p_now timestamptz)
RETURNS TABLE (outbox_id bigint, topic text, payload jsonb, attributes jsonb,
               available_at timestamptz)
LANGUAGE sql AS $$
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT p_topic, m.payload, m.attributes, p_now, p_now, tl.log_id
    FROM unnest(p_log_ids) WITH ORDINALITY AS w(log_id, n)
    JOIN task_log tl ON tl.log_id = w.log_id
    JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
    CROSS JOIN LATERAL dagrelay_run_task_message(tl.pipeline, tl.batch_id, t.name, tl.map_index) m
    ORDER BY w.n
    RETURNING outbox_id, topic, payload, attributes, available_at
$$
"""

# The run_task messages of the tasks at the head of a pool's queue that its free slots fit
# (in order: priority, then first come; no skipping). Locks the pool's row. Called by the
# transaction that frees a slot, and by `dagrelay pool set`. A repeated release only repeats a
# message (the claim is a checked write).
RELEASE_POOL = r"""
CREATE FUNCTION dagrelay_release_pool(p_pool text, p_topic text, p_now timestamptz)
RETURNS TABLE (outbox_id bigint, topic text, payload jsonb, attributes jsonb,
               available_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    free integer;
BEGIN
    PERFORM 1 FROM pools WHERE name = p_pool FOR UPDATE;
    SELECT (SELECT slots FROM pools WHERE name = p_pool) - coalesce(sum(h.pool_slots), 0)
    INTO free FROM task_log h
    WHERE h.limited AND h.status = 'PROCESSING' AND h.pool = p_pool;
    RETURN QUERY SELECT * FROM dagrelay_send_run_tasks(ARRAY(
        SELECT h.log_id FROM (
            SELECT q.log_id, q.priority, q.queued_at,
                   sum(q.pool_slots) OVER (ORDER BY q.priority DESC, q.queued_at, q.log_id)
                       AS wanted
            FROM task_log q
            WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.pool = p_pool
            ORDER BY q.priority DESC, q.queued_at, q.log_id
            LIMIT greatest(coalesce(free, 0), 0)
        ) h
        WHERE h.wanted <= free
        ORDER BY h.priority DESC, h.queued_at, h.log_id), p_topic, p_now);
END $$
"""

# Called by the transaction that ends a limited attempt, after its terminal write: releases
# the head of its pool's queue and of its task's max_active queue.
RELEASE_SLOTS = r"""
CREATE FUNCTION dagrelay_release_slots(p_log_id bigint, p_topic text, p_now timestamptz)
RETURNS TABLE (outbox_id bigint, topic text, payload jsonb, attributes jsonb,
               available_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r    record;
    free integer;
BEGIN
    SELECT tl.pool, tl.task_id, t.max_active INTO r
    FROM task_log tl
    JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
    WHERE tl.log_id = p_log_id;
    IF r.pool IS NOT NULL THEN
        RETURN QUERY SELECT * FROM dagrelay_release_pool(r.pool, p_topic, p_now);
    END IF;
    IF r.max_active IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('dagrelay.max_active'), r.task_id);
        SELECT r.max_active - count(*) INTO free FROM task_log h
        WHERE h.limited AND h.status = 'PROCESSING' AND h.task_id = r.task_id;
        RETURN QUERY SELECT * FROM dagrelay_send_run_tasks(ARRAY(
            SELECT q.log_id FROM task_log q
            WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.task_id = r.task_id
            ORDER BY q.priority DESC, q.queued_at, q.log_id
            LIMIT greatest(free, 0)), p_topic, p_now);
    END IF;
END $$
"""


def upgrade() -> None:
    # Allowed in a transaction since PostgreSQL 12; nothing in this revision uses the value
    # before it commits (the plpgsql bodies below are not run here).
    op.execute("ALTER TYPE task_status ADD VALUE IF NOT EXISTS 'QUEUED' AFTER 'NEW'")
    for statement in [*COLUMNS, *TABLES]:
        op.execute(statement)
    op.execute("DROP FUNCTION dagrelay_pipeline_version(text, timestamptz)")
    for function in (
        PIN_FUNCTION,
        BATCH_OUTCOME,
        CLAIM_LIMITED,
        SEND_RUN_TASKS,
        RELEASE_POOL,
        RELEASE_SLOTS,
    ):
        op.execute(function)


DOWNGRADE = [
    "DROP FUNCTION dagrelay_release_slots(bigint, text, timestamptz)",
    "DROP FUNCTION dagrelay_release_pool(text, text, timestamptz)",
    "DROP FUNCTION dagrelay_send_run_tasks(bigint[], text, timestamptz)",
    "DROP FUNCTION dagrelay_claim_limited(text, text, text, timestamptz, text, integer)",
    """UPDATE task_log SET status = 'NEW', queued_at = NULL
       WHERE status::text = 'QUEUED'""",
    "DROP INDEX task_log_task_queue_idx",
    "DROP INDEX task_log_pool_queue_idx",
    "DROP INDEX task_log_task_holders_idx",
    "DROP INDEX task_log_pool_holders_idx",
    "DROP TABLE pools",
    *[
        f"ALTER TABLE task_log DROP COLUMN {c}"
        for c in ("limited", "queued_at", "priority", "pool_slots", "pool")
    ],
    *[
        f"ALTER TABLE {t} DROP COLUMN {c}"
        for t in ("version_tasks", "tasks")
        for c in ("max_active", "priority", "pool_slots")
    ],
    "DROP FUNCTION dagrelay_pipeline_version(text, timestamptz)",
]


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
    maps = _revision("0012_map.py")  # the revision below, whose functions come back
    op.execute(maps.PIN_FUNCTION)
    op.execute(maps.BATCH_OUTCOME)


def _revision(file: str) -> ModuleType:
    """An earlier revision, whose functions the downgrade puts back."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"dagrelay_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
