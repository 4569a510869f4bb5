-- Pipeline versions: the definition each batch runs (pipeline_versions, version_tasks,
-- version_edges, made by dagrelay_pipeline_version at batch start), read for history, diff and
-- the batch's own graph; and the move of a batch to the current version (rerun --latest).
-- Loaded by dagrelay.store.queries; each block starts with "-- name: <query name>".

-- name: current_version
-- The pipeline's live definition as a version (found by content hash, or stored now).
SELECT dagrelay_pipeline_version(:pipeline, :now) AS version_id;

-- name: batch_version
-- The batch's version and start task; the batch row stays locked until the caller commits
-- (completions share-lock it: none lands while a rerun moves or resets the batch).
SELECT b.version_id, v.version, b.start_task_id
FROM batches b JOIN pipeline_versions v ON v.version_id = b.version_id
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
FOR UPDATE OF b;

-- name: batch_task_ids
-- The tasks that have a row in the batch.
SELECT task_id FROM task_log WHERE pipeline = :pipeline AND batch_id = :batch_id;

-- name: version_header
SELECT version_id, pipeline, version, content_hash, created_at
FROM pipeline_versions
WHERE version_id = :version_id
   OR (pipeline = :pipeline AND version = :version);

-- name: version_definition_tasks
SELECT task_id, name, handler, params, trigger_rule::text AS trigger_rule, max_retries,
       retry_delay_s, retry_backoff, retry_max_delay_s, timeout_s, pool, enabled, pool_slots,
       priority, max_active, teardown, updates
FROM version_tasks
WHERE version_id = :version_id
ORDER BY name;

-- name: version_definition_edges
SELECT p.name AS parent, c.name AS child
FROM version_edges e
JOIN version_tasks c ON c.version_id = e.version_id AND c.task_id = e.child_task_id
JOIN version_tasks p ON p.version_id = e.version_id AND p.task_id = e.parent_task_id
WHERE e.version_id = :version_id
ORDER BY c.name, p.name;

-- name: pipeline_history
-- Every version of a pipeline, oldest first, with the batches that ran it.
SELECT v.version, v.content_hash, v.created_at,
       (SELECT count(*) FROM version_tasks t WHERE t.version_id = v.version_id) AS tasks,
       coalesce(array_agg(b.batch_id ORDER BY b.created_at, b.batch_id)
                FILTER (WHERE b.batch_id IS NOT NULL), '{}') AS batches
FROM pipeline_versions v
LEFT JOIN batches b ON b.version_id = v.version_id
WHERE v.pipeline = :pipeline
GROUP BY v.version_id
ORDER BY v.version;

-- name: batch_pipelines
-- The pipelines that have a batch with this id (an id is unique only per pipeline).
SELECT pipeline FROM batches WHERE batch_id = :batch_id ORDER BY pipeline;

-- name: move_batch_version
-- rerun --latest: the batch runs :version_id from now on. Rows of tasks the version does not
-- have go (the rule in dagrelay.engine.versions allows it only for rows being rerun), and the
-- fan-in counters go, to be rebuilt from the new version's edges (rebuild_batch_fanin).
WITH moved AS (
    UPDATE batches SET version_id = :version_id
    WHERE pipeline = :pipeline AND batch_id = :batch_id
    RETURNING pipeline, batch_id
),
dropped AS (
    DELETE FROM task_log tl
    USING moved m
    WHERE tl.pipeline = m.pipeline AND tl.batch_id = m.batch_id
      AND NOT EXISTS (SELECT 1 FROM version_tasks t
                      WHERE t.version_id = :version_id AND t.task_id = tl.task_id)
    RETURNING tl.log_id
),
cleared AS (
    DELETE FROM task_fanin f
    USING moved m
    WHERE f.pipeline = m.pipeline AND f.batch_id = m.batch_id
    RETURNING f.task_id
)
SELECT (SELECT count(*) FROM dropped) AS dropped, (SELECT count(*) FROM cleared) AS cleared;

-- name: rebuild_batch_fanin
-- The fan-in counters of a batch counted from its version's edges and the rows it has.
INSERT INTO task_fanin (pipeline, batch_id, task_id, parents, succeeded, failed, skipped,
                        root_cause_log_id)
SELECT b.pipeline, b.batch_id, e.child_task_id, count(*),
       count(*) FILTER (WHERE pl.status = 'SUCCESS'),
       count(*) FILTER (WHERE pl.status IN ('ERROR', 'UPSTREAM_FAILED')),
       count(*) FILTER (WHERE pl.status = 'SKIPPED'),
       min(CASE pl.status WHEN 'ERROR' THEN pl.log_id
                          WHEN 'UPSTREAM_FAILED' THEN pl.root_cause_log_id END)
FROM batches b
JOIN version_edges e ON e.version_id = b.version_id
LEFT JOIN task_log pl
    ON pl.pipeline = b.pipeline AND pl.batch_id = b.batch_id AND pl.task_id = e.parent_task_id
   AND pl.map_index = -1
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
GROUP BY b.pipeline, b.batch_id, e.child_task_id;
