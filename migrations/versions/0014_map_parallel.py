"""``max_parallel`` on a map (``map: {over: ..., max_parallel: N}``): at most N instances of one
mapped task's group run at once, on the pool machinery.

The setting lives in the ``map`` jsonb already in ``tasks`` and ``version_tasks`` (so a batch
keeps its version's value); no column changes. The claim and the release learn a third scope
beside the pool and ``max_active``: the group, i.e. the task within one batch. An instance of a
group with ``max_parallel`` is claimed by ``dagrelay_claim_limited`` (it holds a place of its
group like an attempt holds a pool slot: a ``limited`` PROCESSING row), waits in QUEUED when the
group's places are taken, and the end of an attempt (or the sweeper's lease expiry) releases the
head of its group's queue (``dagrelay_release_slots``).

The downgrade turns the QUEUED rows that only waited for their group (no pool, no max_active)
back into NEW rows (the sweeper sends their message again) and restores 0013's functions.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

DEFAULT_SLOTS = 128  # a pool named by a task but never defined (as in 0013)

# 0013's claim with the group's scope: locks the pool's row, then the task's max_active scope,
# then the group's, then the row; claimed when it fits in each, else QUEUED with its place.
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
    IF NOT blocked AND r.max_parallel IS NOT NULL THEN
        SELECT count(*) INTO held FROM task_log h
        WHERE h.limited AND h.status = 'PROCESSING' AND h.task_id = r.task_id
          AND h.pipeline = p_pipeline AND h.batch_id = p_batch_id;
        SELECT count(*) INTO wanted FROM task_log q
        WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.task_id = r.task_id
          AND q.pipeline = p_pipeline AND q.batch_id = p_batch_id AND q.log_id <> r.id
          AND (q.priority > r.priority
               OR (q.priority = r.priority AND (q.queued_at, q.log_id) < (r.since, r.id)));
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

# 0013's release with the group's scope: after the pool's and the task's queues, the head of
# the group's queue that its free places fit (locks in the claim's order).
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
            ORDER BY q.priority DESC, q.queued_at, q.log_id
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
            ORDER BY q.priority DESC, q.queued_at, q.log_id
            LIMIT greatest(free, 0)), p_topic, p_now);
    END IF;
END $$
"""


def upgrade() -> None:
    op.execute(CLAIM_LIMITED)
    op.execute(RELEASE_SLOTS)


# QUEUED rows that waited only for their group: 0013's claim does not take them.
UNQUEUE = """
UPDATE task_log tl SET status = 'NEW', queued_at = NULL, limited = false
FROM batches b, version_tasks t
WHERE tl.status = 'QUEUED' AND b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
  AND t.version_id = b.version_id AND t.task_id = tl.task_id
  AND t.pool IS NULL AND t.max_active IS NULL
"""


def downgrade() -> None:
    op.execute(UNQUEUE)
    pools = _revision("0013_pools.py")  # the revision below, whose functions come back
    op.execute("DROP FUNCTION dagrelay_release_slots(bigint, text, timestamptz)")
    op.execute("DROP FUNCTION dagrelay_claim_limited(text, text, text, timestamptz, text, integer)")
    op.execute(pools.CLAIM_LIMITED)
    op.execute(pools.RELEASE_SLOTS)


def _revision(file: str) -> ModuleType:
    """An earlier revision, whose functions the downgrade puts back."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"dagrelay_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
