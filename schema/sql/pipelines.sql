-- Pipeline definition files (dagrelay.pipelines) write the same rows a user writes with plain
-- SQL into tasks and task_dependencies: one transaction, set-based, idempotent.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: lock_pipeline_apply
-- This lock serialises concurrent applies of the same pipeline (released at commit/rollback).
SELECT pg_advisory_xact_lock(hashtext('dagrelay.pipeline_apply'), hashtext(:pipeline));

-- name: lock_pipeline_tasks
-- The tasks an apply touches: this pipeline's tasks and any task bearing one of the file's
-- names (which may belong to another pipeline). Locked until the apply commits.
SELECT task_id, name, pipeline
FROM tasks
WHERE pipeline = :pipeline OR name = ANY (CAST(:names AS text[]))
ORDER BY task_id
FOR UPDATE;

-- name: upsert_pipeline_tasks
-- Inserts the file's new tasks and updates those whose definition differs (updated_at changes
-- only then). A name owned by another pipeline is never overwritten. Returns the rows written.
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
ON CONFLICT (name) DO UPDATE
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

-- name: tasks_with_history
-- Tasks of the pipeline that runs refer to: they cannot be deleted.
SELECT t.name
FROM tasks t
WHERE t.pipeline = :pipeline AND t.name = ANY (CAST(:names AS text[]))
  AND (EXISTS (SELECT 1 FROM task_log l WHERE l.task_id = t.task_id)
       OR EXISTS (SELECT 1 FROM task_fanin f WHERE f.task_id = t.task_id)
       OR EXISTS (SELECT 1 FROM batches b WHERE b.start_task_id = t.task_id))
ORDER BY t.name;

-- name: delete_pipeline_tasks
-- Their edges go with them (ON DELETE CASCADE).
DELETE FROM tasks
WHERE pipeline = :pipeline AND name = ANY (CAST(:names AS text[]))
RETURNING name;
