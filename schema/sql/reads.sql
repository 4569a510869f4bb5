-- The read model: every read-only statement of the CLI, the dashboard and the status function
-- (dagrelay.store.reads), grouped by what they read. Nothing here changes a row; every state
-- change is in queries.sql. Loaded by dagrelay.store.queries with the other schema/*.sql files;
-- each block starts with "-- name: <query name>", and a name is defined once across all of them.

-- name: read_only
-- The dashboard reads in a transaction the database refuses to write in.
SET TRANSACTION READ ONLY;

-- == One batch (dagrelay.store.reads.read_batches) ==============================================

-- name: batch_heads
-- The batches with this id (one per pipeline unless :pipeline is given), with their version.
SELECT b.pipeline, b.batch_id, b.status::text AS status, b.params, st.name AS start_task,
       b.triggered_by, b.created_at, b.finished_at, v.version
FROM batches b
JOIN pipeline_versions v ON v.version_id = b.version_id
LEFT JOIN version_tasks st ON st.version_id = b.version_id AND st.task_id = b.start_task_id
WHERE b.batch_id = :batch_id AND (CAST(:pipeline AS text) IS NULL OR b.pipeline = :pipeline)
ORDER BY b.pipeline;

-- name: batch_task_rows
-- Every task of each batch's version with its row in the batch (log_id NULL: no row yet):
-- the rows in the order they ran, then the tasks without a row by name. A QUEUED row has its
-- place: the tasks queued ahead of it in its pool (or, without a pool, for its max_active), in
-- the order of the queue key (priority with aging: migrations/versions/0019_pool_aging.py).
SELECT b.pipeline, t.name AS task, t.handler, t.trigger_rule::text AS trigger_rule, tl.log_id,
       tl.status::text AS status, tl.attempt, tl.started_at, tl.finished_at, tl.error,
       tl.root_cause_log_id, rc.name AS root_cause_task, tl.pool, place.ahead,
       tl.job ->> 'waiting_for' AS waiting_for, tl.job ->> 'since' AS waiting_since
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id
LEFT JOIN task_log tl
    ON tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline AND tl.task_id = t.task_id
   AND tl.map_index = -1
LEFT JOIN LATERAL (
    SELECT count(*)::integer AS ahead FROM task_log q
    WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED'
      AND (q.pool = tl.pool OR (tl.pool IS NULL AND q.task_id = tl.task_id))
      AND (dagrelay_queue_key(q.queued_at, q.priority), q.log_id)
          < (dagrelay_queue_key(tl.queued_at, tl.priority), tl.log_id)
) place ON tl.status = 'QUEUED'
LEFT JOIN task_log rcl ON rcl.log_id = tl.root_cause_log_id
LEFT JOIN version_tasks rc ON rc.version_id = b.version_id AND rc.task_id = rcl.task_id
WHERE b.batch_id = :batch_id AND (CAST(:pipeline AS text) IS NULL OR b.pipeline = :pipeline)
ORDER BY b.pipeline, tl.log_id IS NULL, coalesce(tl.started_at, tl.created_at), tl.log_id, t.name;

-- name: batch_attempts
-- The audit trail: every attempt of the batch, reruns included (their task_log row is new).
-- run numbers a task's runs in the batch: a rerun starts again at attempt 1, so each attempt 1
-- opens the next run.
SELECT b.pipeline, t.name AS task,
       sum(CASE WHEN a.attempt = 1 THEN 1 ELSE 0 END)
           OVER (PARTITION BY b.pipeline, t.name ORDER BY a.started_at, a.attempt_id) AS run,
       a.attempt, a.outcome::text AS outcome, a.error, a.started_at, a.finished_at, a.worker
FROM task_attempts a
JOIN batches b ON b.batch_id = a.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = a.task_id
WHERE a.batch_id = :batch_id AND (CAST(:pipeline AS text) IS NULL OR b.pipeline = :pipeline)
ORDER BY b.pipeline, t.name, a.started_at, a.attempt_id;

-- name: batch_edges
-- The edges of each batch's version as (parent, child) names: the batch's own graph.
SELECT b.pipeline, p.name AS parent, c.name AS child
FROM batches b
JOIN version_edges e ON e.version_id = b.version_id
JOIN version_tasks c ON c.version_id = e.version_id AND c.task_id = e.child_task_id
JOIN version_tasks p ON p.version_id = e.version_id AND p.task_id = e.parent_task_id
WHERE b.batch_id = :batch_id AND (CAST(:pipeline AS text) IS NULL OR b.pipeline = :pipeline)
ORDER BY b.pipeline, p.name, c.name;

-- name: batch_dead_letters
-- Messages Pub/Sub gave up on for this batch id; one without a pipeline belongs to each batch.
SELECT received_at, action, pipeline, task, delivery_attempts, source_subscription, reason
FROM dead_letters
WHERE batch_id = :batch_id
  AND (CAST(:pipeline AS text) IS NULL OR pipeline = :pipeline OR pipeline IS NULL)
ORDER BY received_at, dead_letter_id;

-- == Lists of batches ===========================================================================

-- name: recent_batches
-- The latest batches (optionally of one pipeline): task_counts maps each status of the batch's
-- rows to its count; tasks_in_scope counts the tasks the batch runs (the whole pipeline, or the
-- start task and its descendants), tasks_finished those of its rows that have finished.
-- The scope is read from each batch's version.
WITH RECURSIVE recent AS (
    SELECT b.pipeline, b.batch_id, b.status::text AS status, b.start_task_id, b.triggered_by,
           b.created_at, b.finished_at, b.version_id, v.version
    FROM batches b JOIN pipeline_versions v ON v.version_id = b.version_id
    WHERE CAST(:pipeline AS text) IS NULL OR b.pipeline = :pipeline
    ORDER BY b.created_at DESC, b.pipeline, b.batch_id
    LIMIT :limit
),
scope(pipeline, batch_id, task_id) AS (
    SELECT r.pipeline, r.batch_id, t.task_id
    FROM recent r JOIN version_tasks t ON t.version_id = r.version_id
    WHERE r.start_task_id IS NULL OR t.task_id = r.start_task_id
    UNION
    SELECT s.pipeline, s.batch_id, d.child_task_id
    FROM scope s
    JOIN recent r ON r.pipeline = s.pipeline AND r.batch_id = s.batch_id
    JOIN version_edges d ON d.version_id = r.version_id AND d.parent_task_id = s.task_id
    WHERE r.start_task_id IS NOT NULL
)
SELECT r.pipeline, r.batch_id, r.status, r.triggered_by, r.created_at, r.finished_at, r.version,
       coalesce((SELECT jsonb_object_agg(c.status, c.n)
                 FROM (SELECT tl.status::text AS status, count(*) AS n
                       FROM task_log tl
                       WHERE tl.pipeline = r.pipeline AND tl.batch_id = r.batch_id
                         AND tl.map_index = -1
                       GROUP BY tl.status) c), '{}'::jsonb) AS task_counts,
       (SELECT count(*) FROM scope s
        WHERE s.pipeline = r.pipeline AND s.batch_id = r.batch_id) AS tasks_in_scope,
       (SELECT count(*) FROM task_log tl
        WHERE tl.pipeline = r.pipeline AND tl.batch_id = r.batch_id AND tl.map_index = -1
          AND tl.status IN ('SUCCESS', 'ERROR', 'UPSTREAM_FAILED', 'SKIPPED', 'CANCELLED'))
           AS tasks_finished
FROM recent r
ORDER BY r.created_at DESC, r.pipeline, r.batch_id;

-- name: batch_statuses
-- The status of each of these batches of a pipeline (backfill's progress).
SELECT batch_id, status::text AS status
FROM batches
WHERE pipeline = :pipeline AND batch_id = ANY (CAST(:batch_ids AS text[]));

-- == Pipelines ==================================================================================

-- name: pipelines_with_tasks
SELECT DISTINCT pipeline FROM tasks ORDER BY pipeline;

-- name: pipelines_with_tasks_or_batches
-- The filter of the dashboard's batches page.
SELECT pipeline FROM tasks
UNION
SELECT pipeline FROM batches
ORDER BY pipeline;

-- name: export_pipeline_tasks
-- A pipeline's tasks with every column a pipeline file can set.
SELECT name, handler, params, trigger_rule::text AS trigger_rule, max_retries, retry_delay_s,
       retry_backoff, retry_max_delay_s, timeout_s, pool, enabled, pool_slots, priority,
       max_active, map, teardown, updates, deadline, description
FROM tasks
WHERE pipeline = :pipeline
ORDER BY name;

-- name: pipeline_description
SELECT description, deadline FROM pipelines WHERE pipeline = :pipeline;

-- name: export_pipeline_edges
-- A pipeline's edges as (parent, child) names.
SELECT p.name AS parent, c.name AS child
FROM task_dependencies d
JOIN tasks c ON c.task_id = d.child_task_id
JOIN tasks p ON p.task_id = d.parent_task_id
WHERE c.pipeline = :pipeline
ORDER BY p.name, c.name;


-- == One task in a batch (the operator's rerun and history) =====================================

-- name: batch_rows
-- Every task of the batch's version with its row's status in the batch (NULL: no row).
SELECT t.name, tl.status::text AS status
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id
LEFT JOIN task_log tl
    ON tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id AND tl.task_id = t.task_id
   AND tl.map_index = -1
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
ORDER BY t.name;

-- name: batch_parents
-- {child: parents} of the batch's version, as (parent, child) names.
SELECT p.name AS parent, c.name AS child
FROM batches b
JOIN version_edges e ON e.version_id = b.version_id
JOIN version_tasks c ON c.version_id = e.version_id AND c.task_id = e.child_task_id
JOIN version_tasks p ON p.version_id = e.version_id AND p.task_id = e.parent_task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
ORDER BY c.name, p.name;

-- name: rerun_preview
-- What a rerun of :task (and with :downstream its descendants) would reset in the batch: the
-- same scope as rerun_scope in queries.sql, read without locking, for the operator to see.
WITH RECURSIVE batch AS (
    SELECT pipeline, batch_id, version_id FROM batches
    WHERE pipeline = :pipeline AND batch_id = :batch_id
),
scope(task_id) AS (
    SELECT t.task_id FROM version_tasks t JOIN batch b ON b.version_id = t.version_id
    WHERE t.name = :task
    UNION
    SELECT d.child_task_id
    FROM version_edges d JOIN scope s ON d.parent_task_id = s.task_id
    WHERE CAST(:downstream AS boolean) AND d.version_id = (SELECT version_id FROM batch)
)
SELECT t.name, tl.status::text AS status, tl.attempt
FROM scope s
CROSS JOIN batch b
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = s.task_id
JOIN task_log tl
    ON tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id AND tl.task_id = s.task_id
   AND tl.map_index = -1
ORDER BY t.name;

-- name: task_history
-- Every attempt of a task in a batch, across reruns (a rerun's replaced row leaves its attempts
-- with log_id NULL), oldest first; plus whether each belongs to the task's current row.
SELECT a.attempt_id, a.attempt, a.started_at, a.finished_at, a.outcome::text AS outcome,
       a.error, a.worker, a.traceback, a.log_id IS NOT NULL AS current, b.pipeline
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
JOIN task_attempts a ON a.batch_id = b.batch_id AND a.task_id = t.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
ORDER BY a.started_at, a.attempt_id;

-- name: task_row
-- The task's current row in the batch (none: never started, or no such task/batch).
SELECT tl.pipeline, tl.status::text AS status, tl.attempt, rc.name AS root_cause_task
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
JOIN task_log tl
    ON tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id AND tl.task_id = t.task_id
   AND tl.map_index = -1
LEFT JOIN task_log rcl ON rcl.log_id = tl.root_cause_log_id
LEFT JOIN version_tasks rc ON rc.version_id = b.version_id AND rc.task_id = rcl.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id;

-- name: batch_outputs
-- Each task's output in the batch (dagrelay.testing returns them with the statuses): a mapped
-- task's is its group's (its items' outputs in index order), never one instance's.
SELECT t.name AS task, tl.output
FROM batches b
JOIN task_log tl ON tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id AND tl.map_index = -1;

-- name: batch_items
-- Every instance of the batch's mapped tasks, by task and index: its item, status, attempts,
-- output and error (dagrelay.testing's per-item results).
SELECT t.name AS task, i.map_index, i.item, i.status::text AS status, i.attempt, i.output,
       i.error
FROM batches b
JOIN task_log i ON i.pipeline = b.pipeline AND i.batch_id = b.batch_id AND i.map_index >= 0
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = i.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
ORDER BY t.name, i.map_index;

-- == The dashboard's pages (dagrelay.dashboard.model) ============================================

-- name: dashboard_task
-- One task of a batch: its definition in the batch's version and its row in the batch (status
-- NULL: no row yet).
SELECT t.name AS task, t.handler, t.trigger_rule::text AS trigger_rule, t.params AS task_params,
       b.params AS batch_params, tl.status::text AS status, tl.attempt, tl.created_at,
       tl.started_at, tl.finished_at, tl.next_attempt_at, tl.error, tl.output,
       rc.name AS root_cause_task,
       tl.job ->> 'waiting_for' AS waiting_for, tl.job ->> 'since' AS waiting_since
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.pipeline = b.pipeline
    AND tl.task_id = t.task_id AND tl.map_index = -1
LEFT JOIN task_log rcl ON rcl.log_id = tl.root_cause_log_id
LEFT JOIN version_tasks rc ON rc.version_id = b.version_id AND rc.task_id = rcl.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id;

-- name: dashboard_task_attempts
-- Every attempt of a task in a batch, across reruns, oldest first, numbered by run.
SELECT sum(CASE WHEN a.attempt = 1 THEN 1 ELSE 0 END)
           OVER (ORDER BY a.started_at, a.attempt_id) AS run,
       a.attempt, a.outcome::text AS outcome, a.started_at, a.finished_at, a.worker, a.error,
       a.traceback, a.log_id IS NOT NULL AS current
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
JOIN task_attempts a ON a.batch_id = b.batch_id AND a.task_id = t.task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
ORDER BY a.started_at, a.attempt_id;

-- name: dashboard_grid
-- The grid of a pipeline: each of its latest :limit batches with its rows' statuses by task
-- name ({} for a batch with no rows yet).
SELECT b.batch_id, b.status::text AS status, b.created_at,
       coalesce((SELECT jsonb_object_agg(t.name, tl.status::text)
                 FROM task_log tl
                 JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
                 WHERE tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id
                   AND tl.map_index = -1), '{}'::jsonb)
           AS statuses
FROM batches b
WHERE b.pipeline = :pipeline
ORDER BY b.created_at DESC, b.batch_id
LIMIT :limit;

-- name: dashboard_rejected
-- The latest rejected messages (data: the message data as received, base64, cut to what the
-- table keeps).
SELECT rejected_id, message_id, received_at, attributes, data, payload_bytes, payload_sha256,
       reason
FROM rejected_messages
ORDER BY received_at DESC, rejected_id DESC
LIMIT :limit;

-- name: dashboard_dead_letters
-- The latest dead letters: messages Pub/Sub gave up delivering.
SELECT dead_letter_id, message_id, received_at, source_subscription, delivery_attempts, action,
       pipeline, batch_id, task, attributes, data, payload_bytes, payload_sha256, reason
FROM dead_letters
ORDER BY received_at DESC, dead_letter_id DESC
LIMIT :limit;

-- == Triggering and rejected messages (dagrelay trigger, dagrelay rejected) =====================

-- name: batch_head
-- A batch's status, params and the message that started it (trigger's checks).
SELECT status::text AS status, params, triggered_by, trigger_message_id, created_at, finished_at
FROM batches
WHERE pipeline = :pipeline AND batch_id = :batch_id;

-- name: rejected_messages_page
-- Rejected messages newest first, from before :before_id (keyset paging), received since :since.
SELECT rejected_id, message_id, received_at, attributes, data, payload_bytes, reason
FROM rejected_messages
WHERE (CAST(:before_id AS bigint) IS NULL OR rejected_id < :before_id)
  AND (CAST(:since AS timestamptz) IS NULL OR received_at >= :since)
ORDER BY rejected_id DESC
LIMIT :page;

-- name: rejection_of_request
-- The rejection of the message a CLI command published (its message id and its request_id
-- attribute: message ids repeat when the emulator restarts).
SELECT reason, received_at
FROM rejected_messages
WHERE message_id = :message_id AND attributes ->> 'request_id' = :request_id
ORDER BY rejected_id
LIMIT 1;
