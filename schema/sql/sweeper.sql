-- The sweeper's repairs (dagrelay.engine.sweeper): expired leases, lost messages, overdue polls,
-- batches whose last completion crashed before finishing them.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: expired_leases
-- PROCESSING attempts whose lease ran out (the function was killed, or the handler hung). An
-- attempt the sweeper could not conclude before (its error says why) comes last.
SELECT tl.log_id, tl.attempt, tl.pipeline, tl.batch_id, tl.map_index, t.task_id, t.name,
       t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff, t.retry_max_delay_s,
       tl.limited
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE tl.status = 'PROCESSING' AND tl.lease_expires_at < :now
ORDER BY tl.error IS NOT NULL, tl.lease_expires_at
LIMIT :limit;

-- name: stale_tasks
-- NEW rows, and RETRY rows that are due, whose latest run_task message became available before
-- :cutoff: that message was lost (an emulator restart, a crash before publish, ...). Locked
-- until the caller's commit; requeue_tasks writes their new messages.
SELECT tl.log_id, tl.pipeline, tl.batch_id, t.name, tl.status::text AS status, tl.attempt
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
FOR UPDATE OF tl SKIP LOCKED;

-- name: requeue_tasks
-- A new run_task message for each of the stale tasks :ids (stale_tasks); a duplicate is
-- harmless (the claim is a checked write). One statement for all of them; the sweeper falls
-- back to one id at a time when it fails, so one bad row does not stop the others.
INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
SELECT :topic, m.payload, m.attributes, :now, :now, tl.log_id
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
CROSS JOIN LATERAL dagrelay_run_task_message(tl.pipeline, tl.batch_id, t.name, tl.map_index) m
WHERE tl.log_id = ANY (CAST(:ids AS bigint[]))
ORDER BY tl.log_id
RETURNING outbox_id, topic, payload, attributes, available_at;

-- name: record_sweep_error
-- Why the sweeper could not repair a task row (shown with the task): fenced by the status and
-- attempt it saw; the task's next claim or result overwrites it.
UPDATE task_log SET error = :error
WHERE log_id = :log_id AND status = CAST(:status AS task_status) AND attempt = :attempt
  AND error IS DISTINCT FROM :error;

-- name: overdue_polls
-- Deferred attempts whose poll is overdue (its message was lost): the sweeper polls them. One
-- the sweeper could not poll before (its error says why) comes last.
SELECT tl.log_id, tl.pipeline, tl.batch_id, t.name, tl.attempt
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE tl.job IS NOT NULL AND tl.status = 'PROCESSING' AND tl.poll_at <= :cutoff
ORDER BY tl.error IS NOT NULL, tl.poll_at
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

-- name: idle_batch_candidates
-- The batches finish_idle_batches looks at: when its one statement fails, the sweeper finishes
-- them one at a time (finish_batch, the same rule), so one bad batch does not stop the others.
SELECT pipeline, batch_id FROM batches
WHERE status IN ('RUNNING', 'CANCELLING') AND created_at <= :cutoff
ORDER BY created_at, pipeline, batch_id;

-- name: stalled_queues
-- The safety net of the pools: a queue whose tasks have waited since before :cutoff while its
-- pool (or task, for max_active) has free slots — the task released for them was cancelled
-- before it claimed. One row (the oldest queued task) per queue.
SELECT DISTINCT ON (q.pool, CASE WHEN q.pool IS NULL THEN q.task_id END)
       q.log_id, q.pipeline, q.batch_id, q.attempt
FROM task_log q
WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.queued_at <= :cutoff
ORDER BY q.pool, CASE WHEN q.pool IS NULL THEN q.task_id END, q.queued_at, q.log_id;

-- name: release_queues
-- The queues of :ids (stalled_queues) get the messages their free slots fit
-- (dagrelay_release_slots of their oldest row). A queue with no free slot gets nothing: no
-- polling of full pools.
SELECT m.outbox_id, m.topic, m.payload, m.attributes, m.available_at
FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS s(log_id, n)
CROSS JOIN LATERAL dagrelay_release_slots(s.log_id, :topic, :now) m
ORDER BY s.n;
