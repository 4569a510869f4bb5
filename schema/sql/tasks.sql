-- One attempt of one task: claim, heartbeat, defer, finish, and the fan-in/fan-out step that
-- decides the children of the tasks it finished.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: claim_task
-- NEW (or RETRY that is due) -> PROCESSING, attempt + 1, lease set, attempt history opened; also
-- returns everything the handler needs. No row back means the claim did not land. The task is
-- the batch's version's task of that name; a batch being cancelled runs only its teardowns.
WITH claimed AS (
    UPDATE task_log tl
    SET status = 'PROCESSING', attempt = tl.attempt + 1, started_at = :now, finished_at = NULL,
        lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => t.timeout_s),
        next_attempt_at = NULL, error = NULL, job = NULL, poll_at = NULL
    FROM batches b, version_tasks t
    WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
      AND t.version_id = b.version_id AND t.name = :task
      AND (b.status = 'RUNNING' OR (b.status = 'CANCELLING' AND t.teardown))  -- teardown runs
      AND tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id AND tl.task_id = t.task_id
      AND tl.map_index = :map_index
      AND (tl.status = 'NEW' OR (tl.status = 'RETRY' AND tl.next_attempt_at <= :now))
      AND t.pool IS NULL AND t.max_active IS NULL  -- limited tasks: claim_limited
      AND (tl.map_index < 0 OR t.map -> 'max_parallel' IS NULL)  -- and a map's max_parallel
    RETURNING tl.log_id, tl.attempt, tl.task_id, tl.pipeline, tl.batch_id, tl.lease_expires_at,
              b.version_id, b.params AS batch_params, tl.map_index, tl.item
),
opened AS (
    INSERT INTO task_attempts (log_id, batch_id, task_id, attempt, started_at, worker)
    SELECT log_id, batch_id, task_id, attempt, :now, :worker FROM claimed
)
SELECT c.log_id, c.attempt, c.pipeline, c.lease_expires_at, t.task_id, t.name, t.handler,
       t.params, t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff,
       t.retry_max_delay_s, c.batch_params, NULL::jsonb AS job, c.map_index, c.item,
       dagrelay_parent_outputs(c.version_id, c.batch_id, c.task_id) AS parent_outputs,
       c.version_id
FROM claimed c
JOIN version_tasks t ON t.version_id = c.version_id AND t.task_id = c.task_id;

-- name: claim_limited
-- The claim of a task with a pool or a max_active, or of an instance of a map with a
-- max_parallel: PROCESSING when its slots are free, with
-- what its handler needs (claim_task's shape), else QUEUED with its place (ahead)
-- (migrations/versions/0014_map_parallel.py, dagrelay_claim_limited). No row back: the row is not
-- claimable (a duplicate, a finished task, a batch not RUNNING).
WITH c AS MATERIALIZED (
    SELECT * FROM dagrelay_claim_limited(:pipeline, :batch_id, :task, :now, :worker, :map_index)
)
-- The statement sees task_log as it was before the function ran: attempt and lease come from it.
SELECT c.status AS claim_status, c.ahead, tl.log_id, c.attempt, tl.pipeline,
       c.lease_expires_at, t.task_id, t.name, t.handler, t.params, t.timeout_s, t.max_retries,
       t.retry_delay_s, t.retry_backoff, t.retry_max_delay_s, b.params AS batch_params,
       NULL::jsonb AS job, tl.map_index, tl.item, true AS limited,
       CASE WHEN c.status = 'PROCESSING'
            THEN dagrelay_parent_outputs(b.version_id, tl.batch_id, tl.task_id) END
           AS parent_outputs,
       b.version_id
FROM c
JOIN task_log tl ON tl.log_id = c.log_id
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id;

-- name: release_slots
-- In the transaction that ended a limited attempt: the run_task messages of the waiting tasks
-- its freed slot lets start (dagrelay_release_slots, migrations/versions/0013_pools.py).
SELECT outbox_id, topic, payload, attributes, available_at
FROM dagrelay_release_slots(:log_id, :topic, :now);

-- name: task_state
-- Why a claim did not land: the task's row in this batch (if any) and the batch's status.
-- No row back: no such batch, or its version has no such task.
SELECT t.task_id, b.pipeline, tl.status::text AS status, tl.attempt, tl.lease_expires_at,
       b.status::text AS batch_status
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id
                     AND tl.map_index = :map_index
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id;

-- name: extend_lease
-- Heartbeat of a long handler: push its lease out by timeout_s, only while its attempt is live
-- and its batch is still RUNNING (no row back: the handler should stop).
UPDATE task_log tl
SET lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => t.timeout_s)
FROM batches b, version_tasks t
WHERE tl.log_id = :log_id AND tl.status = 'PROCESSING' AND tl.attempt = :attempt
  AND b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
  AND t.version_id = b.version_id AND t.task_id = tl.task_id
  AND (b.status = 'RUNNING' OR (b.status = 'CANCELLING' AND t.teardown))
RETURNING tl.lease_expires_at;

-- name: defer_attempt
-- The attempt's work goes on elsewhere (a BigQuery job): keep the job, renew the lease past
-- the next poll, and write the poll_task message, held until poll_at. Fenced by attempt.
WITH deferred AS (
    UPDATE task_log tl
    SET job = CAST(:job AS jsonb), poll_at = :poll_at,
        lease_expires_at = CAST(:poll_at AS timestamptz) + make_interval(secs => t.timeout_s)
    FROM batches b, version_tasks t
    WHERE tl.log_id = :log_id AND tl.status = 'PROCESSING' AND tl.attempt = :attempt
      AND tl.poll_at IS NOT DISTINCT FROM CAST(:expected_poll_at AS timestamptz)
      AND b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
      AND t.version_id = b.version_id AND t.task_id = tl.task_id
    RETURNING tl.log_id, tl.task_id, tl.pipeline, tl.batch_id, tl.attempt, tl.status, t.name
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic,
           jsonb_build_object('action', 'poll_task', 'pipeline', d.pipeline,
                              'batch_id', d.batch_id, 'task', d.name, 'attempt', d.attempt,
                              'poll_at', CAST(:poll_at AS timestamptz)),
           '{"action": "poll_task"}', :now, :poll_at, d.log_id
    FROM deferred d
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM deferred c) AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages;

-- name: deferred_attempt
-- A deferred attempt and everything its poll needs (the same shape as claim_task's result).
-- A message for an earlier poll (:poll_at given, the attempt has deferred again since) finds
-- nothing: a duplicate poll changes nothing twice. ``live``: its batch still runs it (RUNNING,
-- or CANCELLING for a teardown task). A signal sensor's job gets the first signal of its key
-- that counts (ARCHITECTURE.md, "Sensors": received at or after the batch's start, or with
-- since = 'task' after the task's row was created) as ``arrived``.
SELECT tl.log_id, tl.attempt, tl.pipeline, tl.batch_id, tl.lease_expires_at, t.task_id, t.name,
       t.handler, t.params, t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff,
       t.retry_max_delay_s, b.params AS batch_params, tl.poll_at, tl.limited,
       CASE WHEN s.arrived IS NULL THEN tl.job
            ELSE tl.job || jsonb_build_object('arrived', s.arrived) END AS job,
       (b.status = 'RUNNING' OR (b.status = 'CANCELLING' AND t.teardown)) AS live,
       dagrelay_parent_outputs(b.version_id, tl.batch_id, tl.task_id) AS parent_outputs,
       b.version_id
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id
LEFT JOIN LATERAL (
    SELECT jsonb_build_object('signal_id', g.signal_id, 'key', g.key, 'payload', g.payload,
                              'received_at', g.received_at) AS arrived
    FROM signals g
    WHERE tl.job ? 'signal_key' AND g.key = tl.job ->> 'signal_key'
      AND g.received_at >= CASE WHEN tl.job ->> 'since_rule' = 'task' THEN tl.created_at
                                ELSE b.created_at END
    ORDER BY g.received_at, g.signal_id
    LIMIT 1
) s ON true
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id AND tl.status = 'PROCESSING'
  AND tl.job IS NOT NULL AND tl.attempt = :attempt AND tl.map_index = -1
  AND (CAST(:poll_at AS timestamptz) IS NULL OR tl.poll_at = CAST(:poll_at AS timestamptz));

-- name: deferred_to_stop
-- The deferred attempts of a batch that its cancel stops (not teardowns): task, attempt and
-- handler, for the handlers' cancel (dagrelay.engine.core, Engine.cancel_batch).
SELECT t.name, tl.attempt, t.handler
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND NOT t.teardown
JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id AND b.status = 'CANCELLING'
  AND tl.status = 'PROCESSING' AND tl.job IS NOT NULL AND tl.map_index = -1
ORDER BY tl.log_id;

-- name: finish_attempt
-- PROCESSING -> SUCCESS | ERROR | RETRY, fenced by attempt so a late write from an older attempt
-- (a zombie whose lease expired) is rejected; closes the attempt's history row. A RETRY writes
-- its run_task message, held in the outbox until next_attempt_at; an ERROR writes the one alert.
-- A RETRY in a batch that is no longer RUNNING (cancelled meanwhile) is CANCELLED instead,
-- unless the task is a teardown (it runs in a CANCELLING batch, retries included).
-- An instance of a mapped task writes no alert here: its group's counters decide (map.sql).
-- An empty tasks array back means the write did not land. updates_assets: the task's version
-- declares assets it updates (ARCHITECTURE.md, "Assets").
WITH running AS (
    SELECT 1 FROM task_log tl
    JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
    WHERE tl.log_id = :log_id
      AND (b.status = 'RUNNING' OR (b.status = 'CANCELLING' AND t.teardown))
    FOR SHARE OF b
),
outcome AS (
    SELECT CASE WHEN CAST(:status AS task_status) = 'RETRY' AND NOT EXISTS (SELECT 1 FROM running)
                THEN 'CANCELLED' ELSE CAST(:status AS task_status) END AS status
),
done AS (
    UPDATE task_log
    SET status = o.status,
        finished_at = CASE WHEN o.status = 'RETRY' THEN NULL ELSE CAST(:now AS timestamptz) END,
        next_attempt_at = CASE WHEN o.status = 'RETRY'
                               THEN CAST(:next_attempt_at AS timestamptz) END,
        lease_expires_at = NULL, job = NULL, poll_at = NULL,
        output = CAST(:output AS jsonb), error = :error
    FROM outcome o
    WHERE log_id = :log_id AND task_log.status = 'PROCESSING' AND attempt = :attempt
      AND (CAST(:lease_before AS timestamptz) IS NULL
           OR task_log.lease_expires_at < CAST(:lease_before AS timestamptz))
    RETURNING log_id, task_id, pipeline, batch_id, task_log.status, attempt, map_index
),
closed AS (
    UPDATE task_attempts a
    SET finished_at = :now, outcome = d.status, error = :error, traceback = :traceback
    FROM done d
    WHERE a.log_id = d.log_id AND a.attempt = d.attempt
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT CAST(:topic AS text), m.payload, m.attributes, CAST(:now AS timestamptz),
           CAST(:next_attempt_at AS timestamptz), d.log_id
    FROM done d
    CROSS JOIN LATERAL dagrelay_run_task_message(d.pipeline, d.batch_id, :task, d.map_index) m
    WHERE d.status = 'RETRY'
    UNION ALL
    SELECT CAST(:alerts_topic AS text),
           jsonb_build_object('kind', 'task_failed', 'pipeline', d.pipeline,
                              'batch_id', d.batch_id, 'task', CAST(:task AS text),
                              'attempt', d.attempt, 'error', CAST(:error AS text),
                              'log_id', d.log_id, 'root_cause', CAST(:task AS text),
                              'at', CAST(:now AS timestamptz)),
           CAST('{"kind": "task_failed"}' AS jsonb), CAST(:now AS timestamptz),
           CAST(:now AS timestamptz), d.log_id
    FROM done d
    WHERE d.status = 'ERROR' AND d.map_index < 0  -- an item's: count_map_item decides
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM done c) AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages,
       EXISTS (SELECT 1 FROM running) AS batch_running,
       -- whether the task updates assets: only then does its success write asset events
       EXISTS (SELECT 1 FROM done d
               JOIN batches b ON b.pipeline = d.pipeline AND b.batch_id = d.batch_id
               JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = d.task_id
               WHERE cardinality(t.updates) > 0) AS updates_assets;

-- name: advance_children
-- The fan-in/fan-out step, settled: dagrelay_advance_children (migrations/versions/
-- 0010_versions.py: the batch's version's edges and tasks) decides the children of the given parents, and the children of those
-- that can never run, level by level inside PostgreSQL. One statement per completion.
SELECT created_tasks AS tasks, created_messages AS messages
FROM dagrelay_advance_children(
    :pipeline, :batch_id, CAST(:parent_ids AS integer[]), CAST(:outcomes AS task_status[]),
    CAST(:root_causes AS bigint[]), :topic, :now);
