-- Signals and the attempts that wait (ARCHITECTURE.md, "Sensors"): a signal recorded once, and
-- the early polls that wake waiting attempts — for a signal's key, or for a batch being
-- cancelled. A wake is a poll_task message available now, for the poll the attempt is at
-- (its poll_at): the held one that follows is then stale and ignored. A waiting attempt is a
-- deferred one whose job says what it waits for (job ? 'waiting_for'; a signal sensor's also
-- job ? 'signal_key'). Times are the :now parameter (the engine's clock).

-- name: record_signal
-- One row per signal; a duplicate (the same dedupe_id) returns no row and writes nothing.
INSERT INTO signals (key, payload, dedupe_id, triggered_by, received_at)
VALUES (:key, CAST(:payload AS jsonb), :dedupe_id, :triggered_by, :now)
ON CONFLICT (dedupe_id) DO NOTHING
RETURNING signal_id;

-- name: wake_signal_waiters
-- A poll now for every attempt waiting for the signal :key (task_log_waiting_signal_idx).
INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
SELECT :topic,
       jsonb_build_object('action', 'poll_task', 'pipeline', tl.pipeline,
                          'batch_id', tl.batch_id, 'task', t.name, 'attempt', tl.attempt,
                          'poll_at', tl.poll_at),
       '{"action": "poll_task"}', :now, :now, tl.log_id
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE tl.job ? 'signal_key' AND tl.job ->> 'signal_key' = :key AND tl.status = 'PROCESSING'
RETURNING outbox_id, topic, payload, attributes, available_at;

-- name: wake_batch_waiters
-- A poll now for every waiting attempt of a batch (a cancel: the poll ends it CANCELLED).
INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
SELECT :topic,
       jsonb_build_object('action', 'poll_task', 'pipeline', tl.pipeline,
                          'batch_id', tl.batch_id, 'task', t.name, 'attempt', tl.attempt,
                          'poll_at', tl.poll_at),
       '{"action": "poll_task"}', :now, :now, tl.log_id
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE tl.pipeline = :pipeline AND tl.batch_id = :batch_id AND tl.status = 'PROCESSING'
  AND tl.job ? 'waiting_for'
RETURNING outbox_id, topic, payload, attributes, available_at;
