-- Every statement that changes task_log, batches, task_fanin or outbox lives here.
-- Loaded once by dagrelay.queries; each block starts with "-- name: <query name>".
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: pin_version
-- The version a new batch of the pipeline runs: its live definition, found by content hash or
-- stored (dagrelay_pipeline_version). NULL version_id: the pipeline has no tasks. Nothing is
-- pinned for a batch that exists already (a duplicate start_batch).
SELECT EXISTS (SELECT 1 FROM batches WHERE pipeline = :pipeline AND batch_id = :batch_id)
           AS batch_exists,
       CASE WHEN NOT EXISTS (SELECT 1 FROM batches
                             WHERE pipeline = :pipeline AND batch_id = :batch_id)
            THEN dagrelay_pipeline_version(:pipeline, :now) END AS version_id;

-- name: version_task_names
SELECT name FROM version_tasks WHERE version_id = :version_id ORDER BY name;

-- name: start_batch
-- Creates the batch on its version, its fan-in counters, its root task_log rows and their
-- run_task messages in one statement, all from the version's rows. A batch that already exists
-- makes every CTE empty: a no-op.
WITH RECURSIVE scope(task_id) AS (
    SELECT task_id FROM version_tasks
    WHERE version_id = :version_id
      AND (CAST(:start_task AS text) IS NULL OR name = :start_task)
    UNION
    SELECT e.child_task_id
    FROM version_edges e JOIN scope s
        ON e.version_id = :version_id AND e.parent_task_id = s.task_id
    WHERE CAST(:start_task AS text) IS NOT NULL
),
batch AS (
    INSERT INTO batches (pipeline, batch_id, params, start_task_id, triggered_by,
                         trigger_message_id, created_at, version_id)
    SELECT :pipeline, :batch_id, CAST(:params AS jsonb),
           (SELECT task_id FROM version_tasks
            WHERE version_id = :version_id AND name = CAST(:start_task AS text)),
           :triggered_by, :message_id, :now, :version_id
    ON CONFLICT (pipeline, batch_id) DO NOTHING
    RETURNING pipeline, batch_id
),
parent_counts AS (
    SELECT s.task_id, count(e.parent_task_id) AS parents
    FROM scope s
    LEFT JOIN version_edges e
        ON e.version_id = :version_id AND e.child_task_id = s.task_id
       AND e.parent_task_id IN (SELECT task_id FROM scope)
    GROUP BY s.task_id
),
fanin AS (
    INSERT INTO task_fanin (pipeline, batch_id, task_id, parents)
    SELECT b.pipeline, b.batch_id, pc.task_id, pc.parents
    FROM batch b CROSS JOIN parent_counts pc
    WHERE pc.parents > 0
),
roots AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at, finished_at)
    SELECT b.pipeline, b.batch_id, t.task_id,
           CASE WHEN t.enabled THEN 'NEW' ELSE 'SKIPPED' END::task_status,
           :now, CASE WHEN t.enabled THEN NULL ELSE CAST(:now AS timestamptz) END
    FROM batch b
    CROSS JOIN parent_counts pc
    JOIN version_tasks t ON t.version_id = :version_id AND t.task_id = pc.task_id
    WHERE pc.parents = 0
    RETURNING log_id, task_id, status
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic,
           jsonb_build_object('action', 'run_task', 'pipeline', CAST(:pipeline AS text),
                              'batch_id', CAST(:batch_id AS text), 'task', t.name),
           '{"action": "run_task"}', :now, :now, r.log_id
    FROM roots r JOIN version_tasks t ON t.version_id = :version_id AND t.task_id = r.task_id
    WHERE r.status = 'NEW'
    RETURNING outbox_id, topic, payload, attributes
)
SELECT 'task' AS kind, r.log_id, r.task_id, r.status::text AS status,
       NULL::bigint AS root_cause_log_id, NULL::bigint AS outbox_id,
       NULL::text AS topic, NULL::jsonb AS payload, NULL::jsonb AS attributes
FROM roots r
UNION ALL
SELECT 'message', NULL, NULL, NULL, NULL, m.outbox_id, m.topic, m.payload, m.attributes
FROM messages m
UNION ALL
SELECT 'batch', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM batch;

-- name: pipeline_tasks
SELECT name FROM tasks WHERE pipeline = :pipeline ORDER BY name;

-- name: task_pipelines
-- The pipelines with a batch :batch_id whose version has a task :task: how a message that does
-- not name its pipeline (an older sender's) finds it, when there is exactly one.
SELECT b.pipeline
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
WHERE b.batch_id = :batch_id
ORDER BY b.pipeline;

-- name: claim_task
-- NEW (or RETRY that is due) -> PROCESSING, attempt + 1, lease set, attempt history opened; also
-- returns everything the handler needs. No row back means the claim did not land.
-- The task is the batch's version's task of that name.
WITH claimed AS (
    UPDATE task_log tl
    SET status = 'PROCESSING', attempt = tl.attempt + 1, started_at = :now, finished_at = NULL,
        lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => t.timeout_s),
        next_attempt_at = NULL, error = NULL, job = NULL, poll_at = NULL
    FROM batches b, version_tasks t
    WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id AND b.status = 'RUNNING'
      AND t.version_id = b.version_id AND t.name = :task
      AND tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id AND tl.task_id = t.task_id
      AND (tl.status = 'NEW' OR (tl.status = 'RETRY' AND tl.next_attempt_at <= :now))
    RETURNING tl.log_id, tl.attempt, tl.task_id, tl.pipeline, tl.batch_id, tl.lease_expires_at,
              b.version_id, b.params AS batch_params
),
opened AS (
    INSERT INTO task_attempts (log_id, batch_id, task_id, attempt, started_at, worker)
    SELECT log_id, batch_id, task_id, attempt, :now, :worker FROM claimed
)
SELECT c.log_id, c.attempt, c.pipeline, c.lease_expires_at, t.task_id, t.name, t.handler,
       t.params, t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff,
       t.retry_max_delay_s, c.batch_params, NULL::jsonb AS job,
       dagrelay_parent_outputs(c.version_id, c.batch_id, c.task_id) AS parent_outputs
FROM claimed c
JOIN version_tasks t ON t.version_id = c.version_id AND t.task_id = c.task_id;

-- name: task_state
-- Why a claim did not land: the task's row in this batch (if any) and the batch's status.
-- No row back: no such batch, or its version has no such task.
SELECT t.task_id, b.pipeline, tl.status::text AS status, tl.attempt, tl.lease_expires_at,
       b.status::text AS batch_status
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id;

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
                              'batch_id', d.batch_id, 'task', CAST(:task AS text)),
           CAST('{"action": "run_task"}' AS jsonb), CAST(:now AS timestamptz),
           CAST(:next_attempt_at AS timestamptz), d.log_id
    FROM done d
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
-- write a run_task message for each child that will run. Edges and tasks are the batch's
-- version's.
WITH batch_running AS (
    SELECT 1 FROM batches
    WHERE pipeline = :pipeline AND batch_id = :batch_id AND status = 'RUNNING'
    FOR SHARE
),
batch_version AS (
    SELECT version_id FROM batches WHERE pipeline = :pipeline AND batch_id = :batch_id
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
    FROM finished f
    JOIN version_edges d
        ON d.version_id = (SELECT version_id FROM batch_version) AND d.parent_task_id = f.task_id
    GROUP BY d.child_task_id
),
-- locked carries the deltas, so counted joins one CTE to the counters' primary key: no join of
-- two CTE scans, whose row estimates (version_edges of a version just stored has no statistics
-- yet) could make it quadratic.
locked AS (
    SELECT c.task_id, x.succeeded, x.failed, x.skipped, x.root_cause
    FROM task_fanin c JOIN deltas x ON x.task_id = c.task_id
    WHERE c.batch_id = :batch_id
    ORDER BY c.task_id
    FOR UPDATE OF c
),
counted AS (
    UPDATE task_fanin c
    SET succeeded = c.succeeded + l.succeeded,
        failed = c.failed + l.failed,
        skipped = c.skipped + l.skipped,
        root_cause_log_id = LEAST(c.root_cause_log_id, l.root_cause)
    FROM locked l
    WHERE c.batch_id = :batch_id AND c.task_id = l.task_id
    RETURNING c.pipeline, c.task_id, c.parents, c.succeeded, c.failed, c.skipped,
              c.root_cause_log_id
),
decided AS (
    SELECT c.pipeline, c.task_id, t.name, t.enabled, c.root_cause_log_id,
           dagrelay_trigger_decision(t.trigger_rule, c.parents, c.succeeded, c.failed,
                                     c.skipped) AS decision
    FROM counted c
    JOIN version_tasks t
        ON t.version_id = (SELECT version_id FROM batch_version) AND t.task_id = c.task_id
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
    FROM created c
    JOIN version_tasks t
        ON t.version_id = (SELECT version_id FROM batch_version) AND t.task_id = c.task_id
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

-- name: finish_batch
-- RUNNING -> SUCCESS | FAILED | CANCELLED once no task of the batch is open: FAILED if a task
-- failed, CANCELLED if a task is still CANCELLED (a cancelled batch rerun only in part never
-- succeeds: what was cancelled did not run). Called after the commit of the completion that
-- may have been the last, so whichever completion commits last sees them all.
UPDATE batches b
SET status = CASE WHEN EXISTS (
                    SELECT 1 FROM task_log tl
                    WHERE tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline
                      AND tl.status IN ('ERROR', 'UPSTREAM_FAILED'))
                  THEN 'FAILED'
                  WHEN EXISTS (
                    SELECT 1 FROM task_log tl
                    WHERE tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline
                      AND tl.status = 'CANCELLED')
                  THEN 'CANCELLED' ELSE 'SUCCESS' END::batch_status,
    finished_at = :now
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id AND b.status = 'RUNNING'
  AND NOT EXISTS (
      SELECT 1 FROM task_log tl
      WHERE tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline
        AND tl.status IN ('NEW', 'PROCESSING', 'RETRY'))
RETURNING status::text AS status;

-- name: mark_published
UPDATE outbox
SET published_at = :now, publish_attempts = publish_attempts + 1, last_error = NULL
WHERE outbox_id = ANY (CAST(:ids AS bigint[])) AND published_at IS NULL;

-- name: mark_publish_failed
UPDATE outbox
SET publish_attempts = publish_attempts + 1, last_error = :error
WHERE outbox_id = ANY (CAST(:ids AS bigint[])) AND published_at IS NULL;

-- name: record_rejected_message
-- A redelivery (same message id, same data) adds no row. Message ids repeat (an emulator restart
-- numbers them from 1 again), so a different message under a known id is a row of its own.
INSERT INTO rejected_messages (message_id, received_at, attributes, data, payload_bytes,
                               payload_sha256, reason)
VALUES (:message_id, :now, CAST(:attributes AS jsonb), :data, :payload_bytes, :payload_sha256,
        :reason)
ON CONFLICT (message_id, payload_sha256) DO NOTHING
RETURNING rejected_id;

-- name: lock_unpublished_outbox
-- The relay's share of outbox rows left unpublished (crash after commit, failed publish).
-- SKIP LOCKED: concurrent sweeps take disjoint rows.
SELECT outbox_id, topic, payload, attributes
FROM outbox
WHERE published_at IS NULL
  AND (available_at <= :cutoff OR (available_at > created_at AND available_at <= :now))
ORDER BY outbox_id
LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: lock_pipeline_apply
-- Pipeline definition files (dagrelay.pipelines.apply) write the same rows a user writes with
-- plain SQL into tasks and task_dependencies: one transaction, set-based, idempotent.
-- This lock serialises concurrent applies of the same pipeline (released at commit/rollback).
SELECT pg_advisory_xact_lock(hashtext('dagrelay.pipeline_apply'), hashtext(:pipeline));

-- name: lock_pipeline_tasks
-- The tasks an apply touches: this pipeline's tasks (names are unique per pipeline). Locked
-- until the apply commits.
SELECT task_id, name, pipeline
FROM tasks
WHERE pipeline = :pipeline
ORDER BY task_id
FOR UPDATE;

-- name: upsert_pipeline_tasks
-- Inserts the file's new tasks and updates those whose definition differs (updated_at changes
-- only then). Returns the rows written.
INSERT INTO tasks AS t (name, pipeline, handler, params, trigger_rule, max_retries,
                        retry_delay_s, retry_backoff, retry_max_delay_s, timeout_s, pool,
                        enabled, created_at, updated_at)
SELECT s.name, :pipeline, s.handler, s.params, s.trigger_rule, s.max_retries, s.retry_delay_s,
       s.retry_backoff, s.retry_max_delay_s, s.timeout_s, s.pool, s.enabled, :now, :now
FROM jsonb_to_recordset(CAST(:tasks AS jsonb)) AS s(
    name text, handler text, params jsonb, trigger_rule trigger_rule, max_retries integer,
    retry_delay_s integer, retry_backoff double precision, retry_max_delay_s integer,
    timeout_s integer, pool text, enabled boolean)
ORDER BY s.name
ON CONFLICT (pipeline, name) DO UPDATE
SET handler = EXCLUDED.handler, params = EXCLUDED.params, trigger_rule = EXCLUDED.trigger_rule,
    max_retries = EXCLUDED.max_retries, retry_delay_s = EXCLUDED.retry_delay_s,
    retry_backoff = EXCLUDED.retry_backoff, retry_max_delay_s = EXCLUDED.retry_max_delay_s,
    timeout_s = EXCLUDED.timeout_s, pool = EXCLUDED.pool, enabled = EXCLUDED.enabled,
    updated_at = EXCLUDED.updated_at
WHERE t.pipeline = EXCLUDED.pipeline
  AND (t.handler, t.params, t.trigger_rule, t.max_retries, t.retry_delay_s, t.retry_backoff,
       t.retry_max_delay_s, t.timeout_s, t.pool, t.enabled)
      IS DISTINCT FROM
      (EXCLUDED.handler, EXCLUDED.params, EXCLUDED.trigger_rule, EXCLUDED.max_retries,
       EXCLUDED.retry_delay_s, EXCLUDED.retry_backoff, EXCLUDED.retry_max_delay_s,
       EXCLUDED.timeout_s, EXCLUDED.pool, EXCLUDED.enabled)
RETURNING t.name;

-- name: delete_stale_edges
-- The file's parent lists are authoritative for the file's tasks: their edges that the file no
-- longer lists are removed. The children[i], parents[i] arrays are the file's edges.
DELETE FROM task_dependencies d
USING tasks c, tasks p
WHERE c.task_id = d.child_task_id AND p.task_id = d.parent_task_id
  AND c.pipeline = :pipeline AND c.name = ANY (CAST(:names AS text[]))
  AND NOT EXISTS (
      SELECT 1
      FROM unnest(CAST(:children AS text[]), CAST(:parents AS text[])) AS w(child, parent)
      WHERE w.child = c.name AND w.parent = p.name)
RETURNING p.name AS parent, c.name AS child;

-- name: insert_missing_edges
-- The file's edges that are not in the table yet. The dependency guard trigger still checks
-- every new edge (self-edge, cycle, crossing pipelines).
WITH added AS (
    INSERT INTO task_dependencies (child_task_id, parent_task_id, created_at)
    SELECT c.task_id, p.task_id, :now
    FROM unnest(CAST(:children AS text[]), CAST(:parents AS text[])) AS w(child, parent)
    JOIN tasks c ON c.name = w.child AND c.pipeline = :pipeline
    JOIN tasks p ON p.name = w.parent AND p.pipeline = :pipeline
    ORDER BY c.task_id, p.task_id
    ON CONFLICT (child_task_id, parent_task_id) DO NOTHING
    RETURNING child_task_id, parent_task_id
)
SELECT p.name AS parent, c.name AS child
FROM added a
JOIN tasks c ON c.task_id = a.child_task_id
JOIN tasks p ON p.task_id = a.parent_task_id
ORDER BY c.name, p.name;

-- name: delete_pipeline_tasks
-- Their edges go with them (ON DELETE CASCADE); batches that ran them keep them in their
-- version.
DELETE FROM tasks
WHERE pipeline = :pipeline AND name = ANY (CAST(:names AS text[]))
RETURNING name;

-- name: extend_lease
-- Heartbeat of a long handler: push its lease out by timeout_s, only while its attempt is live
-- and its batch is still RUNNING (no row back: the handler should stop).
UPDATE task_log tl
SET lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => t.timeout_s)
FROM batches b, version_tasks t
WHERE tl.log_id = :log_id AND tl.status = 'PROCESSING' AND tl.attempt = :attempt
  AND b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id AND b.status = 'RUNNING'
  AND t.version_id = b.version_id AND t.task_id = tl.task_id
RETURNING tl.lease_expires_at;

-- name: expired_leases
-- PROCESSING attempts whose lease ran out (the function was killed, or the handler hung).
SELECT tl.log_id, tl.attempt, tl.pipeline, tl.batch_id, t.task_id, t.name, t.timeout_s,
       t.max_retries, t.retry_delay_s, t.retry_backoff, t.retry_max_delay_s
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
    SELECT tl.log_id, tl.pipeline, tl.batch_id, t.name
    FROM task_log tl
    JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
    WHERE b.status = 'RUNNING'
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
SELECT :topic,
       jsonb_build_object('action', 'run_task', 'pipeline', s.pipeline,
                          'batch_id', s.batch_id, 'task', s.name),
       '{"action": "run_task"}', :now, :now, s.log_id
FROM stale s
RETURNING outbox_id, topic, payload, attributes;

-- name: finish_idle_batches
-- RUNNING batches with no open task: the completion that should have finished them crashed
-- before it could. Same rule as finish_batch.
UPDATE batches b
SET status = CASE WHEN EXISTS (
                    SELECT 1 FROM task_log tl
                    WHERE tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline
                      AND tl.status IN ('ERROR', 'UPSTREAM_FAILED'))
                  THEN 'FAILED'
                  WHEN EXISTS (
                    SELECT 1 FROM task_log tl
                    WHERE tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline
                      AND tl.status = 'CANCELLED')
                  THEN 'CANCELLED' ELSE 'SUCCESS' END::batch_status,
    finished_at = :now
WHERE b.status = 'RUNNING' AND b.created_at <= :cutoff
  AND NOT EXISTS (
      SELECT 1 FROM task_log tl
      WHERE tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline
        AND tl.status IN ('NEW', 'PROCESSING', 'RETRY'))
RETURNING b.pipeline, b.batch_id, b.status::text AS status;

-- name: cancel_batch
-- RUNNING -> CANCELLED. Taking the batch row waits for completions holding it (advance_children
-- and finish_attempt share-lock it), so cancel_waiting_tasks, a statement of its own with a
-- fresh snapshot, sees every row they created.
UPDATE batches SET status = 'CANCELLED', finished_at = :now
WHERE pipeline = :pipeline AND batch_id = :batch_id AND status = 'RUNNING'
RETURNING pipeline, batch_id;

-- name: cancel_waiting_tasks
-- Tasks waiting to run (NEW, RETRY) of a cancelled batch become CANCELLED. Running attempts
-- finish, but advance_children creates nothing in a batch that is not RUNNING.
UPDATE task_log
SET status = 'CANCELLED', finished_at = :now, next_attempt_at = NULL
WHERE pipeline = :pipeline AND batch_id = :batch_id AND status IN ('NEW', 'RETRY')
RETURNING log_id;

-- name: record_dead_letter
-- Keyed like record_rejected_message: a redelivery adds no row, a reused message id does.
INSERT INTO dead_letters (message_id, received_at, source_subscription, delivery_attempts,
                          action, pipeline, batch_id, task, attributes, data, payload_bytes,
                          payload_sha256, reason)
VALUES (:message_id, :now, :source_subscription, :delivery_attempts, :action, :pipeline,
        :batch_id, :task, CAST(:attributes AS jsonb), :data, :payload_bytes, :payload_sha256,
        :reason)
ON CONFLICT (message_id, payload_sha256) DO NOTHING
RETURNING dead_letter_id;

-- name: rerun_scope
-- The tasks to rerun and (with downstream) everything below them, with their rows in the batch.
-- The batch row is locked: completions (advance_children share-locks it) wait for the rerun.
-- Tasks and edges are the batch's version's.
WITH RECURSIVE batch AS (
    SELECT b.pipeline, b.batch_id, b.version_id
    FROM batches b
    WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
    FOR UPDATE
),
scope(task_id) AS (
    SELECT t.task_id FROM version_tasks t JOIN batch b ON b.version_id = t.version_id
    WHERE t.name = ANY (CAST(:tasks AS text[]))
    UNION
    SELECT e.child_task_id
    FROM version_edges e JOIN scope s ON e.parent_task_id = s.task_id
    WHERE CAST(:downstream AS boolean) AND e.version_id = (SELECT version_id FROM batch)
)
SELECT s.task_id, t.name, b.pipeline, tl.log_id, tl.status::text AS status
FROM scope s
CROSS JOIN batch b
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = s.task_id
LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = s.task_id
ORDER BY t.name;

-- name: rerun_remove_rows
-- The rows being rerun go; their attempts stay in task_attempts (log_id set to NULL).
DELETE FROM task_log
WHERE pipeline = :pipeline AND batch_id = :batch_id
  AND task_id = ANY (CAST(:task_ids AS integer[])) AND status <> 'PROCESSING'
RETURNING log_id;

-- name: rerun_recount_fanin
-- The fan-in counters of every child of a removed row, recounted from the rows that remain.
UPDATE task_fanin f
SET succeeded = c.succeeded, failed = c.failed, skipped = c.skipped,
    root_cause_log_id = c.root_cause
FROM (
    SELECT d.child_task_id AS task_id,
           count(*) FILTER (WHERE pl.status = 'SUCCESS') AS succeeded,
           count(*) FILTER (WHERE pl.status IN ('ERROR', 'UPSTREAM_FAILED')) AS failed,
           count(*) FILTER (WHERE pl.status = 'SKIPPED') AS skipped,
           min(CASE pl.status WHEN 'ERROR' THEN pl.log_id
                              WHEN 'UPSTREAM_FAILED' THEN pl.root_cause_log_id END) AS root_cause
    FROM version_edges d
    LEFT JOIN task_log pl ON pl.batch_id = :batch_id AND pl.task_id = d.parent_task_id
    WHERE d.version_id = (SELECT version_id FROM batches
                          WHERE pipeline = :pipeline AND batch_id = :batch_id)
      AND d.child_task_id IN (
        SELECT child_task_id FROM version_edges
        WHERE version_id = d.version_id AND parent_task_id = ANY (CAST(:task_ids AS integer[])))
    GROUP BY d.child_task_id
) c
WHERE f.batch_id = :batch_id AND f.task_id = c.task_id;

-- name: rerun_start
-- The batch runs again and the rerun task is NEW with its run_task message.
WITH resumed AS (
    UPDATE batches SET status = 'RUNNING', finished_at = NULL
    WHERE pipeline = :pipeline AND batch_id = :batch_id
    RETURNING pipeline, batch_id, version_id
),
created AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at)
    SELECT r.pipeline, r.batch_id, CAST(:task_id AS integer), 'NEW', :now FROM resumed r
    RETURNING log_id, pipeline, batch_id, task_id, status
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic,
           jsonb_build_object('action', 'run_task', 'pipeline', c.pipeline,
                              'batch_id', c.batch_id, 'task', CAST(:task AS text)),
           '{"action": "run_task"}', :now, :now, c.log_id
    FROM created c
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT 'task' AS kind, c.log_id, c.task_id, c.status::text AS status,
       NULL::bigint AS root_cause_log_id, NULL::bigint AS outbox_id, NULL::text AS topic,
       NULL::jsonb AS payload, NULL::jsonb AS attributes, NULL::timestamptz AS available_at
FROM created c
UNION ALL
SELECT 'message', NULL, NULL, NULL, NULL, m.outbox_id, m.topic, m.payload, m.attributes,
       m.available_at
FROM messages m;

-- name: descendants
-- Below :task_ids in the batch's version.
WITH RECURSIVE version AS (
    SELECT version_id FROM batches WHERE pipeline = :pipeline AND batch_id = :batch_id
),
below(task_id) AS (
    SELECT d.child_task_id FROM version_edges d
    WHERE d.version_id = (SELECT version_id FROM version)
      AND d.parent_task_id = ANY (CAST(:task_ids AS integer[]))
    UNION
    SELECT d.child_task_id FROM version_edges d JOIN below b ON d.parent_task_id = b.task_id
    WHERE d.version_id = (SELECT version_id FROM version)
)
SELECT task_id FROM below;

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
       dagrelay_parent_outputs(b.version_id, tl.batch_id, tl.task_id) AS parent_outputs
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id AND tl.status = 'PROCESSING'
  AND tl.job IS NOT NULL AND tl.attempt = :attempt;

-- name: overdue_polls
-- Deferred attempts whose poll is overdue (its message was lost): the sweeper polls them.
SELECT tl.pipeline, tl.batch_id, t.name, tl.attempt
FROM task_log tl
JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE tl.job IS NOT NULL AND tl.status = 'PROCESSING' AND tl.poll_at <= :cutoff
ORDER BY tl.poll_at
LIMIT :limit;
