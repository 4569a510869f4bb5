-- Batches: start (roots and their messages), finish, cancel; and the two reads of a batch
-- that go with them (the CLI's status).
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
-- makes every CTE empty: a no-op. One row back: the rows created and the messages written (JSON
-- arrays), and whether the batch was created.
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
                         trigger_message_id, created_at, version_id, trace_context)
    SELECT :pipeline, :batch_id, CAST(:params AS jsonb),
           (SELECT task_id FROM version_tasks
            WHERE version_id = :version_id AND name = CAST(:start_task AS text)),
           :triggered_by, :message_id, :now, :version_id, CAST(:trace_context AS text)
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
    SELECT :topic, m.payload, m.attributes, :now, :now, r.log_id
    FROM roots r
    JOIN version_tasks t ON t.version_id = :version_id AND t.task_id = r.task_id
    CROSS JOIN LATERAL dagrelay_run_task_message(:pipeline, :batch_id, t.name) m
    WHERE r.status = 'NEW'
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM roots c) AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages,
       EXISTS (SELECT 1 FROM batch) AS batch_created;

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

-- name: finish_batch
-- RUNNING -> SUCCESS | FAILED | CANCELLED once no task of the batch is open
-- (dagrelay_batch_outcome, the one definition of "finished", shared with finish_idle_batches);
-- CANCELLING -> CANCELLED once its last attempt has ended. Called after the commit of the
-- completion that may have been the last, so whichever completion commits last sees them all.
UPDATE batches b
SET status = CASE WHEN b.status = 'CANCELLING' THEN 'CANCELLED' ELSE o.outcome END,
    finished_at = :now
FROM (SELECT dagrelay_batch_outcome(:pipeline, :batch_id) AS outcome) o
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
  AND b.status IN ('RUNNING', 'CANCELLING') AND o.outcome IS NOT NULL
RETURNING b.status::text AS status;

-- name: cancel_batch
-- RUNNING -> CANCELLING (finish_batch makes it CANCELLED when no attempt runs). Taking the
-- batch row waits for completions holding it (advance_children and finish_attempt share-lock
-- it), so the cancel_* statements after it, each with a fresh snapshot, see every row they
-- created; and nothing creates a row in a batch that is not RUNNING.
UPDATE batches SET status = 'CANCELLING'
WHERE pipeline = :pipeline AND batch_id = :batch_id AND status = 'RUNNING'
RETURNING pipeline, batch_id;

-- name: cancel_waiting_tasks
-- Tasks waiting to run (NEW, QUEUED, RETRY) of a cancelled batch become CANCELLED (a QUEUED
-- one leaves its pool's queue), and so do the open groups of mapped tasks (never claimed:
-- attempt 0, no lease); teardown tasks are spared. Running attempts finish, but
-- advance_children creates nothing but teardown tasks in a batch that is not RUNNING.
UPDATE task_log tl
SET status = 'CANCELLED', finished_at = :now, next_attempt_at = NULL, queued_at = NULL
FROM batches b, version_tasks t
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
  AND tl.pipeline = b.pipeline AND tl.batch_id = b.batch_id
  AND t.version_id = b.version_id AND t.task_id = tl.task_id AND NOT t.teardown
  AND (tl.status IN ('NEW', 'QUEUED', 'RETRY')
       OR (tl.status = 'PROCESSING' AND tl.map_index = -1 AND tl.attempt = 0
           AND tl.lease_expires_at IS NULL))
RETURNING tl.log_id, tl.task_id, tl.map_index,
          -- a group with instances still running: its children count it when they end
          EXISTS (SELECT 1 FROM task_log i
                  WHERE i.batch_id = tl.batch_id AND i.task_id = tl.task_id
                    AND i.map_index >= 0 AND i.status = 'PROCESSING') AS busy;

-- name: cancel_unstarted_tasks
-- Every task of the batch's scope without a row yet gets a CANCELLED row (attempt 0): nothing
-- stays pending, and resume knows what never ran. Teardown tasks are spared: the fan-in
-- creates them once their parents are done (a CANCELLED parent counts as done).
WITH RECURSIVE batch AS (
    SELECT pipeline, batch_id, start_task_id, version_id FROM batches
    WHERE pipeline = :pipeline AND batch_id = :batch_id
),
scope(task_id) AS (
    SELECT t.task_id FROM version_tasks t JOIN batch b ON t.version_id = b.version_id
    WHERE b.start_task_id IS NULL OR t.task_id = b.start_task_id
    UNION
    SELECT e.child_task_id
    FROM version_edges e JOIN scope s ON e.parent_task_id = s.task_id
    WHERE e.version_id = (SELECT version_id FROM batch)
      AND (SELECT start_task_id FROM batch) IS NOT NULL
)
INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at, finished_at)
SELECT :pipeline, :batch_id, s.task_id, 'CANCELLED', :now, :now
FROM scope s
JOIN version_tasks t ON t.version_id = (SELECT version_id FROM batch) AND t.task_id = s.task_id
WHERE NOT t.teardown
ON CONFLICT DO NOTHING
RETURNING log_id, task_id, map_index, false AS busy;

-- name: running_tasks
-- The batch's attempts that are running (deferred ones included).
SELECT count(*) AS running FROM task_log
WHERE pipeline = :pipeline AND batch_id = :batch_id AND status = 'PROCESSING';

-- name: lock_batch
-- The batch's status; its row stays locked until the caller commits.
SELECT status::text AS status FROM batches
WHERE pipeline = :pipeline AND batch_id = :batch_id
FOR UPDATE;

-- name: resume_reset
-- The batch's CANCELLED rows go (the attempts of those that had run stay in task_attempts), and
-- so do the rows of the teardown tasks below a CANCELLED row or a group reopened by resume
-- (:reopened): they ran because of the cancel and run again after what resumes. The batch runs
-- again. Returns the tasks whose rows went: their children's fan-in counters are recounted.
WITH RECURSIVE batch AS (
    SELECT version_id FROM batches WHERE pipeline = :pipeline AND batch_id = :batch_id
),
again(task_id) AS (
    SELECT e.child_task_id
    FROM version_edges e
    JOIN version_tasks t ON t.version_id = e.version_id AND t.task_id = e.child_task_id
    WHERE e.version_id = (SELECT version_id FROM batch) AND t.teardown
      AND (e.parent_task_id = ANY (CAST(:reopened AS integer[]))
           OR EXISTS (SELECT 1 FROM task_log p
                      WHERE p.batch_id = :batch_id AND p.task_id = e.parent_task_id
                        AND p.map_index = -1 AND p.status = 'CANCELLED'))
    UNION
    SELECT e.child_task_id
    FROM version_edges e
    JOIN again a ON e.parent_task_id = a.task_id
    JOIN version_tasks t ON t.version_id = e.version_id AND t.task_id = e.child_task_id
    WHERE e.version_id = (SELECT version_id FROM batch) AND t.teardown
),
removed AS (
    DELETE FROM task_log
    WHERE pipeline = :pipeline AND batch_id = :batch_id
      AND (status = 'CANCELLED'
           OR (task_id IN (SELECT task_id FROM again)
               AND status IN ('SUCCESS', 'ERROR', 'UPSTREAM_FAILED', 'SKIPPED')))
    RETURNING log_id, task_id, map_index
),
resumed AS (
    UPDATE batches SET status = 'RUNNING', finished_at = NULL
    WHERE pipeline = :pipeline AND batch_id = :batch_id AND status = 'CANCELLED'
    RETURNING batch_id
)
SELECT (SELECT count(*) FROM removed) AS removed, (SELECT count(*) FROM resumed) AS resumed,
       (SELECT coalesce(array_agg(DISTINCT task_id), '{}') FROM removed WHERE map_index = -1)
           AS task_ids;

-- name: resume_start
-- Every task of the batch's scope without a row whose fate its parents' rows decide now: a
-- root runs; another by its trigger rule on its fan-in counters (those whose parents have not
-- ended are decided by the fan-in when they do). Rows and run_task messages, like start_batch.
WITH RECURSIVE batch AS (
    SELECT pipeline, batch_id, start_task_id, version_id FROM batches
    WHERE pipeline = :pipeline AND batch_id = :batch_id
),
scope(task_id) AS (
    SELECT t.task_id FROM version_tasks t JOIN batch b ON t.version_id = b.version_id
    WHERE b.start_task_id IS NULL OR t.task_id = b.start_task_id
    UNION
    SELECT e.child_task_id
    FROM version_edges e JOIN scope s ON e.parent_task_id = s.task_id
    WHERE e.version_id = (SELECT version_id FROM batch)
      AND (SELECT start_task_id FROM batch) IS NOT NULL
),
decided AS (
    SELECT t.task_id, t.enabled, t.map, f.root_cause_log_id,
           CASE WHEN f.task_id IS NULL THEN 'RUN'
                ELSE dagrelay_trigger_decision(t.trigger_rule, f.parents, f.succeeded, f.failed,
                                               f.skipped) END AS decision
    FROM scope s
    JOIN version_tasks t ON t.version_id = (SELECT version_id FROM batch) AND t.task_id = s.task_id
    LEFT JOIN task_fanin f ON f.batch_id = :batch_id AND f.task_id = s.task_id
    WHERE NOT EXISTS (SELECT 1 FROM task_log tl
                      WHERE tl.batch_id = :batch_id AND tl.task_id = s.task_id)
),
created AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at, finished_at,
                          root_cause_log_id)
    SELECT :pipeline, :batch_id, d.task_id,
           CASE WHEN d.decision <> 'RUN' THEN d.decision
                WHEN d.enabled AND d.map IS NULL THEN 'NEW'
                WHEN d.enabled THEN 'PROCESSING'  -- a mapped task's group: the engine opens it
                ELSE 'SKIPPED' END::task_status,
           :now,
           CASE WHEN d.decision = 'RUN' AND d.enabled THEN NULL ELSE CAST(:now AS timestamptz) END,
           CASE WHEN d.decision = 'UPSTREAM_FAILED' THEN d.root_cause_log_id END
    FROM decided d
    WHERE d.decision IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING log_id, task_id, status, root_cause_log_id
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic, m.payload, m.attributes, :now, :now, c.log_id
    FROM created c
    JOIN version_tasks t ON t.version_id = (SELECT version_id FROM batch) AND t.task_id = c.task_id
    CROSS JOIN LATERAL dagrelay_run_task_message(:pipeline, :batch_id, t.name) m
    WHERE c.status = 'NEW'
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM created c) AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages;
