-- Read-only queries of the dashboard (functions/dagrelay/dashboard/store.py). Nothing here
-- changes a row: every request runs them in a READ ONLY transaction.
-- Loaded by dagrelay.queries with the other schema/*.sql files; names are unique across files.

-- name: dashboard_read_only
SET TRANSACTION READ ONLY;

-- name: dashboard_batches
-- Newest first, optionally one pipeline's; task_counts maps each task status to its count.
SELECT b.pipeline, b.batch_id, b.status::text AS status, b.triggered_by, b.created_at,
       b.finished_at,
       coalesce((SELECT jsonb_object_agg(c.status, c.n)
                 FROM (SELECT tl.status::text AS status, count(*) AS n
                       FROM task_log tl
                       WHERE tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id
                       GROUP BY tl.status) c), '{}'::jsonb) AS task_counts
FROM batches b
WHERE CAST(:pipeline AS text) IS NULL OR b.pipeline = :pipeline
ORDER BY b.created_at DESC, b.pipeline, b.batch_id
LIMIT :limit;

-- name: dashboard_batch
SELECT b.pipeline, b.batch_id, b.status::text AS status, b.triggered_by, b.created_at,
       b.finished_at, b.params, st.name AS start_task,
       coalesce((SELECT jsonb_object_agg(c.status, c.n)
                 FROM (SELECT tl.status::text AS status, count(*) AS n
                       FROM task_log tl
                       WHERE tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id
                       GROUP BY tl.status) c), '{}'::jsonb) AS task_counts
FROM batches b
LEFT JOIN tasks st ON st.task_id = b.start_task_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id;

-- name: dashboard_batch_tasks
-- Every task of the pipeline with its row in this batch, if it has one yet (status NULL: none).
SELECT t.name AS task, t.handler, t.trigger_rule::text AS trigger_rule, tl.log_id,
       tl.status::text AS status, coalesce(tl.attempt, 0) AS attempt, tl.started_at,
       tl.finished_at, tl.error, rc.name AS root_cause_task
FROM tasks t
LEFT JOIN task_log tl
    ON tl.task_id = t.task_id AND tl.pipeline = t.pipeline AND tl.batch_id = :batch_id
LEFT JOIN task_log rcl ON rcl.log_id = tl.root_cause_log_id
LEFT JOIN tasks rc ON rc.task_id = rcl.task_id
WHERE t.pipeline = :pipeline
ORDER BY t.name;

-- name: dashboard_batch_attempts
-- The audit trail of the batch: every attempt, reruns included (their task_log row is new).
SELECT t.name AS task, a.attempt, a.outcome::text AS outcome, a.error, a.started_at,
       a.finished_at, a.worker
FROM task_attempts a
JOIN tasks t ON t.task_id = a.task_id
WHERE a.batch_id = :batch_id AND t.pipeline = :pipeline
ORDER BY t.name, a.started_at, a.attempt_id;

-- name: dashboard_batch_dead_letters
SELECT received_at, action, pipeline, task, delivery_attempts, source_subscription, reason
FROM dead_letters
WHERE batch_id = :batch_id AND (pipeline = :pipeline OR pipeline IS NULL)
ORDER BY received_at, dead_letter_id;

-- name: dashboard_pipeline_edges
SELECT p.name AS parent, c.name AS child
FROM task_dependencies d
JOIN tasks c ON c.task_id = d.child_task_id
JOIN tasks p ON p.task_id = d.parent_task_id
WHERE c.pipeline = :pipeline
ORDER BY p.name, c.name;

-- name: dashboard_pipeline_tasks
SELECT name AS task, handler, trigger_rule::text AS trigger_rule, max_retries, retry_delay_s,
       retry_backoff, retry_max_delay_s, timeout_s, pool, enabled, params
FROM tasks
WHERE pipeline = :pipeline
ORDER BY name;

-- name: dashboard_pipelines
-- Every pipeline that has tasks or batches (the filter of the batches page).
SELECT pipeline FROM tasks
UNION
SELECT pipeline FROM batches
ORDER BY pipeline;
