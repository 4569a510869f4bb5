-- One attempt of one task: claim, heartbeat, defer, finish, and the fan-in/fan-out step that
-- decides the children of the tasks it finished.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: claim_task
-- NEW (or RETRY that is due) -> PROCESSING, attempt + 1, lease set, attempt history opened; also
-- returns everything the handler needs. No row back means the claim did not land.
WITH claimed AS (
    UPDATE task_log tl
    SET status = 'PROCESSING', attempt = tl.attempt + 1, started_at = :now, finished_at = NULL,
        lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => t.timeout_s),
        next_attempt_at = NULL, error = NULL, job = NULL, poll_at = NULL
    FROM tasks t, batches b
    WHERE t.name = :task AND tl.task_id = t.task_id AND tl.batch_id = :batch_id
      AND b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id AND b.status = 'RUNNING'
      AND (tl.status = 'NEW' OR (tl.status = 'RETRY' AND tl.next_attempt_at <= :now))
    RETURNING tl.log_id, tl.attempt, tl.task_id, tl.pipeline, tl.batch_id, tl.lease_expires_at
),
opened AS (
    INSERT INTO task_attempts (log_id, batch_id, task_id, attempt, started_at, worker)
    SELECT log_id, batch_id, task_id, attempt, :now, :worker FROM claimed
)
SELECT c.log_id, c.attempt, c.pipeline, c.lease_expires_at, t.task_id, t.name, t.handler,
       t.params, t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff,
       t.retry_max_delay_s, b.params AS batch_params, NULL::jsonb AS job,
       dagrelay_parent_outputs(c.batch_id, c.task_id) AS parent_outputs
FROM claimed c
JOIN tasks t ON t.task_id = c.task_id
JOIN batches b ON b.pipeline = c.pipeline AND b.batch_id = c.batch_id;

-- name: task_state
-- Why a claim did not land: the task's row in this batch (if any) and the batch's status.
SELECT t.task_id, t.pipeline, tl.status::text AS status, tl.attempt, tl.lease_expires_at,
       b.status::text AS batch_status
FROM tasks t
LEFT JOIN task_log tl ON tl.task_id = t.task_id AND tl.batch_id = :batch_id
LEFT JOIN batches b ON b.pipeline = t.pipeline AND b.batch_id = :batch_id
WHERE t.name = :task;

-- name: extend_lease
-- Heartbeat of a long handler: push its lease out by timeout_s, only while its attempt is live
-- and its batch is still RUNNING (no row back: the handler should stop).
UPDATE task_log tl
SET lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => t.timeout_s)
FROM tasks t, batches b
WHERE tl.log_id = :log_id AND tl.status = 'PROCESSING' AND tl.attempt = :attempt
  AND t.task_id = tl.task_id
  AND b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id AND b.status = 'RUNNING'
RETURNING tl.lease_expires_at;

-- name: defer_attempt
-- The attempt's work goes on elsewhere (a BigQuery job): keep the job, renew the lease past
-- the next poll, and write the poll_task message, held until poll_at. Fenced by attempt.
WITH deferred AS (
    UPDATE task_log tl
    SET job = CAST(:job AS jsonb), poll_at = :poll_at,
        lease_expires_at = CAST(:poll_at AS timestamptz) + make_interval(secs => t.timeout_s)
    FROM tasks t
    WHERE tl.log_id = :log_id AND tl.status = 'PROCESSING' AND tl.attempt = :attempt
      AND tl.poll_at IS NOT DISTINCT FROM CAST(:expected_poll_at AS timestamptz)
      AND t.task_id = tl.task_id
    RETURNING tl.log_id, tl.task_id, tl.pipeline, tl.batch_id, tl.attempt, tl.status, t.name
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic,
           jsonb_build_object('action', 'poll_task', 'pipeline', d.pipeline,
                              'batch_id', d.batch_id, 'task', d.name, 'attempt', d.attempt),
           '{"action": "poll_task"}', :now, :poll_at, d.log_id
    FROM deferred d
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT 'task' AS kind, d.log_id, d.task_id, d.status::text AS status,
       NULL::bigint AS root_cause_log_id, NULL::bigint AS outbox_id, NULL::text AS topic,
       NULL::jsonb AS payload, NULL::jsonb AS attributes, NULL::timestamptz AS available_at
FROM deferred d
UNION ALL
SELECT 'message', NULL, NULL, NULL, NULL, m.outbox_id, m.topic, m.payload, m.attributes,
       m.available_at
FROM messages m;

-- name: deferred_attempt
-- A deferred attempt and everything its poll needs (the same shape as claim_task's result).
SELECT tl.log_id, tl.attempt, tl.pipeline, tl.batch_id, tl.lease_expires_at, t.task_id, t.name,
       t.handler, t.params, t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff,
       t.retry_max_delay_s, b.params AS batch_params, tl.job, tl.poll_at,
       dagrelay_parent_outputs(tl.batch_id, tl.task_id) AS parent_outputs
FROM task_log tl
JOIN tasks t ON t.task_id = tl.task_id
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
WHERE tl.batch_id = :batch_id AND t.name = :task AND tl.status = 'PROCESSING'
  AND tl.job IS NOT NULL AND tl.attempt = :attempt;

-- name: finish_attempt
-- PROCESSING -> SUCCESS | ERROR | RETRY, fenced by attempt so a late write from an older attempt
-- (a zombie whose lease expired) is rejected; closes the attempt's history row. A RETRY writes
-- its run_task message, held in the outbox until next_attempt_at; an ERROR writes the one alert.
-- A RETRY in a batch that is no longer RUNNING (cancelled meanwhile) is CANCELLED instead.
-- No 'task' row back means the write did not land.
WITH running AS (
    SELECT 1 FROM batches b
    WHERE (b.pipeline, b.batch_id) = (SELECT pipeline, batch_id FROM task_log WHERE log_id = :log_id)
      AND b.status = 'RUNNING'
    FOR SHARE
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
    RETURNING log_id, task_id, pipeline, batch_id, task_log.status, attempt
),
closed AS (
    UPDATE task_attempts a
    SET finished_at = :now, outcome = d.status, error = :error, traceback = :traceback
    FROM done d
    WHERE a.log_id = d.log_id AND a.attempt = d.attempt
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT CAST(:topic AS text),
           jsonb_build_object('action', 'run_task', 'pipeline', d.pipeline,
                              'batch_id', d.batch_id, 'task', t.name),
           CAST('{"action": "run_task"}' AS jsonb), CAST(:now AS timestamptz),
           CAST(:next_attempt_at AS timestamptz), d.log_id
    FROM done d JOIN tasks t ON t.task_id = d.task_id
    WHERE d.status = 'RETRY'
    UNION ALL
    SELECT CAST(:alerts_topic AS text),
           jsonb_build_object('kind', 'task_failed', 'pipeline', d.pipeline,
                              'batch_id', d.batch_id, 'task', t.name, 'attempt', d.attempt,
                              'error', CAST(:error AS text), 'log_id', d.log_id,
                              'root_cause', t.name, 'at', CAST(:now AS timestamptz)),
           CAST('{"kind": "task_failed"}' AS jsonb), CAST(:now AS timestamptz),
           CAST(:now AS timestamptz), d.log_id
    FROM done d JOIN tasks t ON t.task_id = d.task_id
    WHERE d.status = 'ERROR'
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT 'task' AS kind, d.log_id, d.task_id, d.status::text AS status,
       NULL::bigint AS root_cause_log_id, NULL::bigint AS outbox_id, NULL::text AS topic,
       NULL::jsonb AS payload, NULL::jsonb AS attributes, NULL::timestamptz AS available_at
FROM done d
UNION ALL
SELECT 'message', NULL, NULL, NULL, NULL, m.outbox_id, m.topic, m.payload, m.attributes,
       m.available_at
FROM messages m;

-- name: advance_children
-- The fan-in/fan-out step. Given parents that just reached a terminal state, in one statement:
-- count their outcomes into their children's counters (rows locked in task_id order, so
-- concurrent completions never deadlock), decide each child's trigger rule from the counters,
-- create the children whose rule is now decided (exactly once: ON CONFLICT DO NOTHING), and
-- write a run_task message for each child that will run.
WITH batch_running AS (
    SELECT 1 FROM batches
    WHERE pipeline = :pipeline AND batch_id = :batch_id AND status = 'RUNNING'
    FOR SHARE
),
finished AS (
    SELECT f.task_id, f.outcome, NULLIF(f.root_cause, 0) AS root_cause
    FROM unnest(CAST(:parent_ids AS integer[]), CAST(:outcomes AS task_status[]),
                CAST(:root_causes AS bigint[])) AS f(task_id, outcome, root_cause)
),
deltas AS (
    SELECT d.child_task_id AS task_id,
           count(*) FILTER (WHERE f.outcome = 'SUCCESS') AS succeeded,
           count(*) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED')) AS failed,
           count(*) FILTER (WHERE f.outcome = 'SKIPPED') AS skipped,
           min(f.root_cause) FILTER (WHERE f.outcome IN ('ERROR', 'UPSTREAM_FAILED')) AS root_cause
    FROM finished f JOIN task_dependencies d ON d.parent_task_id = f.task_id
    GROUP BY d.child_task_id
),
locked AS (
    SELECT c.task_id
    FROM task_fanin c
    WHERE c.batch_id = :batch_id AND c.task_id IN (SELECT task_id FROM deltas)
    ORDER BY c.task_id
    FOR UPDATE
),
counted AS (
    UPDATE task_fanin c
    SET succeeded = c.succeeded + x.succeeded,
        failed = c.failed + x.failed,
        skipped = c.skipped + x.skipped,
        root_cause_log_id = LEAST(c.root_cause_log_id, x.root_cause)
    FROM deltas x, locked l
    WHERE c.batch_id = :batch_id AND c.task_id = x.task_id AND l.task_id = x.task_id
    RETURNING c.pipeline, c.task_id, c.parents, c.succeeded, c.failed, c.skipped,
              c.root_cause_log_id
),
decided AS (
    SELECT c.pipeline, c.task_id, t.name, t.enabled, c.root_cause_log_id,
           dagrelay_trigger_decision(t.trigger_rule, c.parents, c.succeeded, c.failed,
                                     c.skipped) AS decision
    FROM counted c JOIN tasks t ON t.task_id = c.task_id
),
created AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at, finished_at,
                          root_cause_log_id)
    SELECT d.pipeline, :batch_id, d.task_id,
           CASE WHEN d.decision <> 'RUN' THEN d.decision
                WHEN d.enabled THEN 'NEW'
                ELSE 'SKIPPED' END::task_status,
           :now,
           CASE WHEN d.decision = 'RUN' AND d.enabled THEN NULL
                ELSE CAST(:now AS timestamptz) END,
           CASE WHEN d.decision = 'UPSTREAM_FAILED' THEN d.root_cause_log_id END
    FROM decided d
    WHERE d.decision IS NOT NULL AND EXISTS (SELECT 1 FROM batch_running)
    ON CONFLICT (batch_id, task_id) DO NOTHING
    RETURNING log_id, pipeline, task_id, status, root_cause_log_id
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic,
           jsonb_build_object('action', 'run_task', 'pipeline', c.pipeline,
                              'batch_id', CAST(:batch_id AS text), 'task', t.name),
           '{"action": "run_task"}', :now, :now, c.log_id
    FROM created c JOIN tasks t ON t.task_id = c.task_id
    WHERE c.status = 'NEW'
    RETURNING outbox_id, topic, payload, attributes
)
SELECT 'task' AS kind, c.log_id, c.task_id, c.status::text AS status, c.root_cause_log_id,
       NULL::bigint AS outbox_id, NULL::text AS topic, NULL::jsonb AS payload,
       NULL::jsonb AS attributes
FROM created c
UNION ALL
SELECT 'message', NULL, NULL, NULL, NULL, m.outbox_id, m.topic, m.payload, m.attributes
FROM messages m;
