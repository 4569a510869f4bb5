-- Pipeline definition files (dagrelay.pipelines) write the same rows a user writes with plain
-- SQL into tasks and task_dependencies: one transaction, set-based, idempotent.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: lock_pipeline_apply
-- Pipeline definition files (dagrelay.pipelines.apply) write the same rows a user writes with
-- plain SQL into tasks and task_dependencies: one transaction, only what changed, set-based.
-- This lock serialises concurrent applies of the same pipeline (released at commit/rollback);
-- it returns the pipeline's stored description and deadline, to compare with the file's.
SELECT pg_advisory_xact_lock(hashtext('dagrelay.pipeline_apply'), hashtext(:pipeline)),
       (SELECT description FROM pipelines WHERE pipeline = :pipeline) AS description,
       (SELECT deadline FROM pipelines WHERE pipeline = :pipeline) AS deadline;

-- name: pipeline_apply_tasks
-- What an apply compares the file with: this pipeline's tasks (names are unique per pipeline).
-- Read without row locks: a running batch never waits on an apply that changes nothing.
SELECT name, pipeline, handler, params, trigger_rule::text AS trigger_rule, max_retries,
       retry_delay_s, retry_backoff, retry_max_delay_s, timeout_s, pool, enabled, pool_slots,
       priority, max_active, map, teardown, updates, deadline, description
FROM tasks
WHERE pipeline = :pipeline;

-- name: insert_pipeline_tasks
-- The file's new tasks. A name inserted meanwhile (plain SQL) is skipped (not returned).
INSERT INTO tasks (name, pipeline, handler, params, trigger_rule, max_retries, retry_delay_s,
                   retry_backoff, retry_max_delay_s, timeout_s, pool, enabled, pool_slots, priority,
                   max_active, map, teardown, updates, deadline, description, created_at, updated_at)
SELECT s.name, :pipeline, s.handler, s.params, s.trigger_rule, s.max_retries, s.retry_delay_s,
       s.retry_backoff, s.retry_max_delay_s, s.timeout_s, s.pool, s.enabled, s.pool_slots,
       s.priority, s.max_active, s.map, s.teardown, s.updates, s.deadline, s.description, :now, :now
FROM jsonb_to_recordset(CAST(:tasks AS jsonb)) AS s(
    name text, handler text, params jsonb, trigger_rule trigger_rule, max_retries integer,
    retry_delay_s integer, retry_backoff double precision, retry_max_delay_s integer,
    timeout_s integer, pool text, enabled boolean, pool_slots integer, priority integer,
    max_active integer, map jsonb, teardown boolean, updates text[], deadline jsonb, description text)
ORDER BY s.name
ON CONFLICT DO NOTHING
RETURNING name;

-- name: update_pipeline_tasks
-- The file's tasks whose definition differs (updated_at changes only then); a checked write:
-- returns the names it changed.
UPDATE tasks AS t
SET handler = s.handler, params = s.params, trigger_rule = s.trigger_rule,
    max_retries = s.max_retries, retry_delay_s = s.retry_delay_s,
    retry_backoff = s.retry_backoff, retry_max_delay_s = s.retry_max_delay_s,
    timeout_s = s.timeout_s, pool = s.pool, enabled = s.enabled, pool_slots = s.pool_slots,
    priority = s.priority, max_active = s.max_active, map = s.map, teardown = s.teardown,
    updates = s.updates, deadline = s.deadline, description = s.description, updated_at = :now
FROM jsonb_to_recordset(CAST(:tasks AS jsonb)) AS s(
    name text, handler text, params jsonb, trigger_rule trigger_rule, max_retries integer,
    retry_delay_s integer, retry_backoff double precision, retry_max_delay_s integer,
    timeout_s integer, pool text, enabled boolean, pool_slots integer, priority integer,
    max_active integer, map jsonb, teardown boolean, updates text[], deadline jsonb, description text)
WHERE t.name = s.name AND t.pipeline = :pipeline
  AND (t.handler, t.params, t.trigger_rule, t.max_retries, t.retry_delay_s, t.retry_backoff,
       t.retry_max_delay_s, t.timeout_s, t.pool, t.enabled, t.pool_slots, t.priority,
       t.max_active, t.map, t.teardown, t.updates, t.deadline, t.description)
      IS DISTINCT FROM
      (s.handler, s.params, s.trigger_rule, s.max_retries, s.retry_delay_s, s.retry_backoff,
       s.retry_max_delay_s, s.timeout_s, s.pool, s.enabled, s.pool_slots, s.priority,
       s.max_active, s.map, s.teardown, s.updates, s.deadline, s.description)
RETURNING t.name;

-- name: delete_pipeline_edges
-- The edges (children[i], parents[i]) of the pipeline, by name: the file no longer lists them.
DELETE FROM task_dependencies d
USING unnest(CAST(:children AS text[]), CAST(:parents AS text[])) AS w(child, parent),
      tasks c, tasks p
WHERE c.pipeline = :pipeline AND c.name = w.child AND p.pipeline = :pipeline AND p.name = w.parent
  AND d.child_task_id = c.task_id AND d.parent_task_id = p.task_id
RETURNING p.name AS parent, c.name AS child;

-- name: insert_pipeline_edges
-- The edges (children[i], parents[i]) the file adds. The dependency guard trigger checks each
-- new edge (self-edge, cycle, crossing pipelines).
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
JOIN tasks p ON p.task_id = a.parent_task_id;

-- name: delete_pipeline_tasks
-- Their edges go with them (ON DELETE CASCADE); batches that ran them keep them in their
-- version.
DELETE FROM tasks
WHERE pipeline = :pipeline AND name = ANY (CAST(:names AS text[]))
RETURNING name;

-- name: set_pipeline_description
-- The file's description and batch deadline of the pipeline (neither: the row goes), when they
-- differ from the stored ones; returns the pipeline if a row changed.
WITH written AS (
    INSERT INTO pipelines (pipeline, description, deadline)
    SELECT :pipeline, CAST(:description AS text), CAST(:deadline AS jsonb)
    WHERE CAST(:description AS text) IS NOT NULL OR CAST(:deadline AS jsonb) IS NOT NULL
    ON CONFLICT (pipeline) DO UPDATE
    SET description = EXCLUDED.description, deadline = EXCLUDED.deadline
    WHERE (pipelines.description, pipelines.deadline)
          IS DISTINCT FROM (EXCLUDED.description, EXCLUDED.deadline)
    RETURNING pipeline
),
removed AS (
    DELETE FROM pipelines
    WHERE pipeline = :pipeline
      AND CAST(:description AS text) IS NULL AND CAST(:deadline AS jsonb) IS NULL
    RETURNING pipeline
)
SELECT pipeline FROM written UNION ALL SELECT pipeline FROM removed;
