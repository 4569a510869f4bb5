-- Rerun: reset tasks (and their descendants) of a batch and start them again.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: rerun_scope
-- The tasks to rerun and (with downstream) everything below them, with their rows in the batch;
-- tasks and edges are the batch's version's. The batch row is locked: completions
-- (advance_children share-locks it) wait for the rerun.
WITH RECURSIVE batch AS (
    SELECT b.pipeline, b.batch_id, b.version_id, b.status
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
SELECT s.task_id, t.name, b.pipeline, tl.log_id, tl.status::text AS status,
       b.status::text AS batch_status
FROM scope s
CROSS JOIN batch b
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = s.task_id
LEFT JOIN task_log tl ON tl.batch_id = b.batch_id AND tl.task_id = s.task_id
                     AND tl.map_index = -1
ORDER BY t.name;

-- name: rerun_remove_rows
-- The rows being rerun go; their attempts stay in task_attempts (log_id set to NULL). A mapped
-- task's instances go with its group row; the rows returned are the tasks' (map_index -1).
WITH removed AS (
    DELETE FROM task_log
    WHERE pipeline = :pipeline AND batch_id = :batch_id
      AND task_id = ANY (CAST(:task_ids AS integer[])) AND status <> 'PROCESSING'
    RETURNING log_id, map_index
)
SELECT log_id FROM removed WHERE map_index = -1;

-- name: rerun_recount_fanin
-- The fan-in counters of every child of a removed row, recounted from the rows that remain.
UPDATE task_fanin f
SET succeeded = c.succeeded, failed = c.failed, skipped = c.skipped,
    root_cause_log_id = c.root_cause
FROM (
    SELECT d.child_task_id AS task_id,
           count(*) FILTER (WHERE pl.status = 'SUCCESS') AS succeeded,
           count(*) FILTER (WHERE pl.status IN ('ERROR', 'UPSTREAM_FAILED', 'CANCELLED'))
               AS failed,
           count(*) FILTER (WHERE pl.status = 'SKIPPED') AS skipped,
           min(CASE pl.status WHEN 'ERROR' THEN pl.log_id
                              WHEN 'UPSTREAM_FAILED' THEN pl.root_cause_log_id END) AS root_cause
    FROM version_edges d
    LEFT JOIN task_log pl ON pl.batch_id = :batch_id AND pl.task_id = d.parent_task_id
                          AND pl.map_index = -1
    WHERE d.version_id = (SELECT version_id FROM batches
                          WHERE pipeline = :pipeline AND batch_id = :batch_id)
      AND d.child_task_id IN (
        SELECT child_task_id FROM version_edges
        WHERE version_id = d.version_id AND parent_task_id = ANY (CAST(:task_ids AS integer[])))
    GROUP BY d.child_task_id
) c
WHERE f.batch_id = :batch_id AND f.task_id = c.task_id;

-- name: rerun_start
-- The batch runs again and the rerun task is NEW with its run_task message. Checked: a
-- CANCELLING batch is never taken back to RUNNING (the rerun would undo the cancel); resumed 0
-- means nothing was written.
WITH resumed AS (
    UPDATE batches SET status = 'RUNNING', finished_at = NULL
    WHERE pipeline = :pipeline AND batch_id = :batch_id
      AND status IN ('RUNNING', 'SUCCESS', 'FAILED', 'CANCELLED')
    RETURNING pipeline, batch_id
),
created AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at)
    SELECT r.pipeline, r.batch_id, t.task_id,
           CASE WHEN t.map IS NULL THEN 'NEW' ELSE 'PROCESSING' END::task_status, :now
    FROM resumed r
    JOIN batches b ON b.pipeline = r.pipeline AND b.batch_id = r.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = CAST(:task_id AS integer)
    RETURNING log_id, pipeline, batch_id, task_id, status
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic, m.payload, m.attributes, :now, :now, c.log_id
    FROM created c
    CROSS JOIN LATERAL dagrelay_run_task_message(c.pipeline, c.batch_id, :task) m
    WHERE c.status = 'NEW'
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM created c) AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages,
       (SELECT count(*) FROM resumed) AS resumed;

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
