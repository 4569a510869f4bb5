-- The sweeper's repairs (dagrelay.engine.sweeper): expired leases, lost messages, overdue polls,
-- batches whose last completion crashed before finishing them.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: expired_leases
-- PROCESSING attempts whose lease ran out (the function was killed, or the handler hung).
SELECT tl.log_id, tl.attempt, tl.pipeline, tl.batch_id, tl.map_index, t.task_id, t.name,
       t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff, t.retry_max_delay_s,
       tl.limited
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE tl.status = 'PROCESSING' AND tl.lease_expires_at < :now
ORDER BY tl.lease_expires_at
LIMIT :limit;

-- name: requeue_stale
-- NEW rows, and RETRY rows that are due, whose latest run_task message became available before
-- :cutoff: that message was lost (an emulator restart, a crash before publish, ...). A new one is
-- written; a duplicate is harmless (the claim is a checked write).
WITH stale AS (
    SELECT tl.log_id, tl.pipeline, tl.batch_id, t.name, tl.map_index
    FROM task_log tl
    JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
    WHERE (b.status = 'RUNNING' OR (b.status = 'CANCELLING' AND t.teardown))
      AND (tl.status = 'NEW' OR (tl.status = 'RETRY' AND tl.next_attempt_at <= :now))
      AND NOT EXISTS (  -- a message still on its way: unpublished (the relay's), or recent
          SELECT 1 FROM outbox o
          WHERE o.log_id = tl.log_id
            AND (o.published_at IS NULL OR o.published_at > :cutoff OR o.available_at > :cutoff))
    ORDER BY tl.log_id
    LIMIT :limit
    FOR UPDATE OF tl SKIP LOCKED
)
INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
SELECT :topic, m.payload, m.attributes, :now, :now, s.log_id
FROM stale s CROSS JOIN LATERAL dagrelay_run_task_message(s.pipeline, s.batch_id, s.name, s.map_index) m
RETURNING outbox_id, topic, payload, attributes, available_at;

-- name: overdue_polls
-- Deferred attempts whose poll is overdue (its message was lost): the sweeper polls them.
SELECT tl.pipeline, tl.batch_id, t.name, tl.attempt
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE tl.job IS NOT NULL AND tl.status = 'PROCESSING' AND tl.poll_at <= :cutoff
ORDER BY tl.poll_at
LIMIT :limit;

-- name: finish_idle_batches
-- RUNNING (or CANCELLING) batches with no open task: the completion that should have finished
-- them crashed before it could. The same rule as finish_batch (dagrelay_batch_outcome).
UPDATE batches b
SET status = CASE WHEN b.status = 'CANCELLING' THEN 'CANCELLED' ELSE x.outcome END,
    finished_at = :now
FROM (
    SELECT pipeline, batch_id, dagrelay_batch_outcome(pipeline, batch_id) AS outcome
    FROM batches
    WHERE status IN ('RUNNING', 'CANCELLING') AND created_at <= :cutoff
) x
WHERE b.pipeline = x.pipeline AND b.batch_id = x.batch_id
  AND b.status IN ('RUNNING', 'CANCELLING') AND x.outcome IS NOT NULL
RETURNING b.pipeline, b.batch_id, b.status::text AS status;

-- name: release_stalled_queues
-- The safety net of the pools: a queue whose tasks have waited since before :cutoff while its
-- pool (or task, for max_active) has free slots — the task released for them was cancelled
-- before it claimed — gets the messages its free slots fit (dagrelay_release_slots of its
-- oldest row). A queue with no free slot gets nothing: no polling of full pools.
SELECT m.outbox_id, m.topic, m.payload, m.attributes, m.available_at
FROM (
    SELECT DISTINCT ON (q.pool, CASE WHEN q.pool IS NULL THEN q.task_id END) q.log_id
    FROM task_log q
    WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.queued_at <= :cutoff
    ORDER BY q.pool, CASE WHEN q.pool IS NULL THEN q.task_id END, q.queued_at, q.log_id
) s
CROSS JOIN LATERAL dagrelay_release_slots(s.log_id, :topic, :now) m;
