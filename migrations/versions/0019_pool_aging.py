"""Priority with aging in pools, ``max_active`` and ``max_parallel`` queues: a queued task is
never passed forever by a stream of higher-priority work.

A queued task's effective priority grows by one for every ``AGING_S`` (60) seconds it waits:
``priority + waited / 60``. Two tasks age at the same rate, so their order does not change with
time and is one key: ``queued_at - priority * 60 s`` (``dagrelay_queue_key``), earliest first,
then the row's id. Guarantee: a task queued at t is passed only by tasks queued before
t + (their priority - its priority) * 60 s; every task queued later waits behind it. The claim
(``dagrelay_claim_limited``: the tasks ahead of a claim), the releases
(``dagrelay_release_pool``, ``dagrelay_release_slots``: the head of a queue) and the queue
indexes use the key; nothing else changes (the same statements per completion).

The downgrade restores 0014's claim and release, 0013's pool release and the former indexes;
rows are untouched both ways (a queue's order is computed, never stored).

Revision ID: 0019
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0019"
down_revision = "0014"
branch_labels = None
depends_on = None

DEFAULT_SLOTS = 128  # a pool named by a task but never defined (as in 0013)
AGING_S = 60  # seconds of waiting worth one point of priority

# A queued task's place in its queue, earliest first (then log_id): when it was queued (in UTC),
# moved earlier by AGING_S seconds per point of priority. Every operation in it is immutable, so
# PostgreSQL inlines it into the queries (no call per row) and it can key the queue indexes.
QUEUE_KEY = f"""
CREATE FUNCTION dagrelay_queue_key(p_queued_at timestamptz, p_priority integer)
RETURNS timestamp LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (p_queued_at AT TIME ZONE 'UTC')
           - make_interval(secs => p_priority::double precision * {AGING_S})
$$
"""

# 0014's claim, the tasks ahead of it ordered by the queue key.
CLAIM_LIMITED = rf"""
CREATE OR REPLACE FUNCTION dagrelay_claim_limited(
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
           t.task_id, t.pool, t.pool_slots, t.priority, t.max_active, t.timeout_s,
           CASE WHEN tl.map_index >= 0 THEN (t.map ->> 'max_parallel')::integer END
               AS max_parallel
    INTO r
    FROM batches b
    JOIN version_tasks t ON t.version_id = b.version_id AND t.name = p_task
    JOIN task_log tl ON tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id
                    AND tl.task_id = t.task_id AND tl.map_index = p_map_index
    WHERE b.pipeline = p_pipeline AND b.batch_id = p_batch_id AND b.status = 'RUNNING'
      AND (t.pool IS NOT NULL OR t.max_active IS NOT NULL
           OR (tl.map_index >= 0 AND t.map ? 'max_parallel'))
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
    IF r.max_parallel IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(
            hashtext('dagrelay.max_parallel ' || p_pipeline || ' ' || p_batch_id), r.task_id);
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
          AND (dagrelay_queue_key(q.queued_at, q.priority), q.log_id)
              < (dagrelay_queue_key(r.since, r.priority), r.id);
        blocked := held + wanted + r.pool_slots > cap;
    END IF;
    IF NOT blocked AND r.max_active IS NOT NULL THEN
        SELECT count(*) INTO held FROM task_log h
        WHERE h.limited AND h.status = 'PROCESSING' AND h.task_id = r.task_id;
        SELECT count(*) INTO wanted FROM task_log q
        WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.task_id = r.task_id
          AND q.log_id <> r.id
          AND (dagrelay_queue_key(q.queued_at, q.priority), q.log_id)
              < (dagrelay_queue_key(r.since, r.priority), r.id);
        blocked := held + wanted + 1 > r.max_active;
        place := wanted;
    END IF;
    IF NOT blocked AND r.max_parallel IS NOT NULL THEN
        SELECT count(*) INTO held FROM task_log h
        WHERE h.limited AND h.status = 'PROCESSING' AND h.task_id = r.task_id
          AND h.pipeline = p_pipeline AND h.batch_id = p_batch_id;
        SELECT count(*) INTO wanted FROM task_log q
        WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.task_id = r.task_id
          AND q.pipeline = p_pipeline AND q.batch_id = p_batch_id AND q.log_id <> r.id
          AND (dagrelay_queue_key(q.queued_at, q.priority), q.log_id)
              < (dagrelay_queue_key(r.since, r.priority), r.id);
        blocked := held + wanted + 1 > r.max_parallel;
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

# 0013's pool release, the head of the queue by the queue key.
RELEASE_POOL = r"""
CREATE OR REPLACE FUNCTION dagrelay_release_pool(p_pool text, p_topic text, p_now timestamptz)
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
            SELECT q.log_id, dagrelay_queue_key(q.queued_at, q.priority) AS queue_key,
                   sum(q.pool_slots) OVER (
                       ORDER BY dagrelay_queue_key(q.queued_at, q.priority), q.log_id) AS wanted
            FROM task_log q
            WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.pool = p_pool
            ORDER BY dagrelay_queue_key(q.queued_at, q.priority), q.log_id
            LIMIT greatest(coalesce(free, 0), 0)
        ) h
        WHERE h.wanted <= free
        ORDER BY h.queue_key, h.log_id), p_topic, p_now);
END $$
"""

# 0014's release of the task's and the group's queues, their heads by the queue key.
RELEASE_SLOTS = r"""
CREATE OR REPLACE FUNCTION dagrelay_release_slots(p_log_id bigint, p_topic text,
                                                  p_now timestamptz)
RETURNS TABLE (outbox_id bigint, topic text, payload jsonb, attributes jsonb,
               available_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r    record;
    free integer;
BEGIN
    SELECT tl.pool, tl.task_id, tl.pipeline, tl.batch_id, t.max_active,
           CASE WHEN tl.map_index >= 0 THEN (t.map ->> 'max_parallel')::integer END
               AS max_parallel
    INTO r
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
            ORDER BY dagrelay_queue_key(q.queued_at, q.priority), q.log_id
            LIMIT greatest(free, 0)), p_topic, p_now);
    END IF;
    IF r.max_parallel IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(
            hashtext('dagrelay.max_parallel ' || r.pipeline || ' ' || r.batch_id), r.task_id);
        SELECT r.max_parallel - count(*) INTO free FROM task_log h
        WHERE h.limited AND h.status = 'PROCESSING' AND h.task_id = r.task_id
          AND h.pipeline = r.pipeline AND h.batch_id = r.batch_id;
        RETURN QUERY SELECT * FROM dagrelay_send_run_tasks(ARRAY(
            SELECT q.log_id FROM task_log q
            WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.task_id = r.task_id
              AND q.pipeline = r.pipeline AND q.batch_id = r.batch_id
            ORDER BY dagrelay_queue_key(q.queued_at, q.priority), q.log_id
            LIMIT greatest(free, 0)), p_topic, p_now);
    END IF;
END $$
"""

INDEXES = [
    "DROP INDEX task_log_pool_queue_idx",
    "DROP INDEX task_log_task_queue_idx",
    """CREATE INDEX task_log_pool_queue_idx
       ON task_log (pool, dagrelay_queue_key(queued_at, priority), log_id)
       WHERE queued_at IS NOT NULL""",
    """CREATE INDEX task_log_task_queue_idx
       ON task_log (task_id, dagrelay_queue_key(queued_at, priority), log_id)
       WHERE queued_at IS NOT NULL""",
]

FORMER_INDEXES = [
    "DROP INDEX task_log_pool_queue_idx",
    "DROP INDEX task_log_task_queue_idx",
    """CREATE INDEX task_log_pool_queue_idx ON task_log (pool, priority DESC, queued_at, log_id)
       WHERE queued_at IS NOT NULL""",
    """CREATE INDEX task_log_task_queue_idx ON task_log (task_id, priority DESC, queued_at, log_id)
       WHERE queued_at IS NOT NULL""",
]


def upgrade() -> None:
    op.execute(QUEUE_KEY)
    for statement in (CLAIM_LIMITED, RELEASE_POOL, RELEASE_SLOTS, *INDEXES):
        op.execute(statement)


def downgrade() -> None:
    pools, parallel = _revision("0013_pools.py"), _revision("0014_map_parallel.py")
    for statement in FORMER_INDEXES:
        op.execute(statement)
    op.execute("DROP FUNCTION dagrelay_release_pool(text, text, timestamptz)")
    op.execute(pools.RELEASE_POOL)
    op.execute(parallel.CLAIM_LIMITED)
    op.execute(parallel.RELEASE_SLOTS)
    op.execute("DROP FUNCTION dagrelay_queue_key(timestamptz, integer)")


def _revision(file: str) -> ModuleType:
    """An earlier revision, whose functions the downgrade puts back."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"dagrelay_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
