-- Dynamic fan-out (map): a mapped task's group row (map_index -1) and its instances
-- (map_index 0..n-1). The group is opened by the fan-in cascade (PROCESSING, no message), its
-- instances are created here in one statement, and it is decided once from its counters
-- (map_groups) when its last instance ends. Times are always the :now parameter.

-- name: map_sources
-- The open groups among :log_ids and what they map over: the parent's output value at
-- map.over, described (its JSON type, its length if a list, its text if a string: a gs://
-- reference) without shipping the list.
SELECT g.log_id, g.pipeline, g.batch_id, g.task_id, t.name, t.map,
       jsonb_typeof(s.items) AS kind,
       CASE WHEN jsonb_typeof(s.items) = 'array' THEN jsonb_array_length(s.items) END AS length,
       CASE WHEN jsonb_typeof(s.items) = 'string' THEN s.items #>> '{}' END AS ref
FROM task_log g
JOIN batches b ON b.pipeline = g.pipeline AND b.batch_id = g.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = g.task_id
LEFT JOIN version_tasks pt
       ON pt.version_id = b.version_id AND pt.name = split_part(t.map ->> 'over', '.', 1)
LEFT JOIN task_log pl ON pl.batch_id = g.batch_id AND pl.task_id = pt.task_id
                     AND pl.map_index = -1
CROSS JOIN LATERAL (
    SELECT pl.output -> substr(t.map ->> 'over', length(pt.name) + 2) AS items
) s
WHERE g.log_id = ANY (CAST(:log_ids AS bigint[])) AND g.map_index = -1
  AND g.status = 'PROCESSING' AND t.map IS NOT NULL
ORDER BY g.log_id;

-- name: expand_map
-- Every group of :log_ids gets its counters and one NEW instance (with its run_task message)
-- per item: the parent's list, or the items the engine read from a gs:// reference
-- (:resolved, an object keyed by the group's log_id). One statement for any number of items.
WITH open_groups AS (
    SELECT g.log_id, g.pipeline, g.batch_id, g.task_id, t.name, x.tolerated,
           coalesce(CAST(:resolved AS jsonb) -> g.log_id::text,
                    pl.output -> substr(t.map ->> 'over', length(pt.name) + 2)) AS items
    FROM unnest(CAST(:log_ids AS bigint[]), CAST(:tolerated AS integer[])) AS x(log_id, tolerated)
    JOIN task_log g ON g.log_id = x.log_id AND g.map_index = -1 AND g.status = 'PROCESSING'
    JOIN batches b ON b.pipeline = g.pipeline AND b.batch_id = g.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = g.task_id
    JOIN version_tasks pt
      ON pt.version_id = b.version_id AND pt.name = split_part(t.map ->> 'over', '.', 1)
    JOIN task_log pl ON pl.batch_id = g.batch_id AND pl.task_id = pt.task_id
                    AND pl.map_index = -1
),
counters AS (
    INSERT INTO map_groups (batch_id, task_id, pipeline, total, tolerated)
    SELECT o.batch_id, o.task_id, o.pipeline, jsonb_array_length(o.items), o.tolerated
    FROM open_groups o
    ON CONFLICT (batch_id, task_id) DO UPDATE
    SET total = EXCLUDED.total, tolerated = EXCLUDED.tolerated, succeeded = 0, failed = 0
),
instances AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, map_index, item, status, created_at)
    SELECT o.pipeline, o.batch_id, o.task_id, CAST(e.ordinality - 1 AS integer), e.value,
           'NEW', :now
    FROM open_groups o
    CROSS JOIN LATERAL jsonb_array_elements(o.items) WITH ORDINALITY AS e(value, ordinality)
    RETURNING log_id, pipeline, batch_id, task_id, map_index, status, root_cause_log_id
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic, m.payload, m.attributes, :now, :now, i.log_id
    FROM instances i
    JOIN open_groups o ON o.batch_id = i.batch_id AND o.task_id = i.task_id
    CROSS JOIN LATERAL dagrelay_run_task_message(i.pipeline, i.batch_id, o.name, i.map_index) m
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.log_id), '[]') FROM instances i)
           AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages;

-- name: close_groups
-- Groups decided without instances: SKIPPED (an empty list) or ERROR (no list, too many
-- items), with the reason in error; an ERROR writes the one alert. Fenced: open groups only.
WITH closed AS (
    UPDATE task_log g
    SET status = CAST(x.status AS task_status), finished_at = :now, error = x.error
    FROM unnest(CAST(:log_ids AS bigint[]), CAST(:statuses AS text[]), CAST(:errors AS text[]))
         AS x(log_id, status, error)
    WHERE g.log_id = x.log_id AND g.map_index = -1 AND g.status = 'PROCESSING'
    RETURNING g.log_id, g.task_id, g.pipeline, g.batch_id, g.status, g.error,
              g.root_cause_log_id
),
alerts AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :alerts_topic,
           jsonb_build_object('kind', 'task_failed', 'pipeline', c.pipeline,
                              'batch_id', c.batch_id, 'task', t.name, 'attempt', 0,
                              'error', c.error, 'log_id', c.log_id, 'root_cause', t.name,
                              'at', CAST(:now AS timestamptz)),
           CAST('{"kind": "task_failed"}' AS jsonb), :now, :now, c.log_id
    FROM closed c
    JOIN batches b ON b.pipeline = c.pipeline AND b.batch_id = c.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = c.task_id
    WHERE c.status = 'ERROR'
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM closed c) AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM alerts m)
           AS messages;

-- name: count_map_item
-- An instance ended (SUCCESS, or ERROR/CANCELLED: failed): its group's counters. The row lock
-- taken here orders the instances of one group; the last one sees succeeded + failed = total.
-- A failed item is recorded on its own row and not alerted (finish_attempt writes no alert for
-- an instance): the ERROR that makes the failed items exceed the tolerated ones writes the
-- group's one alert, here, in the same statement.
WITH counted AS (
    UPDATE map_groups
    SET succeeded = succeeded + CASE WHEN CAST(:status AS text) = 'SUCCESS' THEN 1 ELSE 0 END,
        failed = failed + CASE WHEN CAST(:status AS text) = 'SUCCESS' THEN 0 ELSE 1 END
    WHERE batch_id = :batch_id AND task_id = :task_id
    RETURNING pipeline, batch_id, total, tolerated, succeeded, failed
),
alert AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT CAST(:alerts_topic AS text),
           jsonb_build_object('kind', 'task_failed', 'pipeline', c.pipeline,
                              'batch_id', c.batch_id, 'task', CAST(:task AS text),
                              'attempt', CAST(:attempt AS integer),
                              'map_index', CAST(:map_index AS integer),
                              'error', format('%s of %s items failed, more than the %s tolerated;'
                                              ' item %s: %s', c.failed, c.total, c.tolerated,
                                              CAST(:map_index AS integer),
                                              CAST(:error AS text)),
                              'log_id', CAST(:log_id AS bigint),
                              'root_cause', CAST(:task AS text),
                              'at', CAST(:now AS timestamptz)),
           CAST('{"kind": "task_failed"}' AS jsonb), CAST(:now AS timestamptz),
           CAST(:now AS timestamptz), CAST(:log_id AS bigint)
    FROM counted c
    WHERE CAST(:status AS text) = 'ERROR' AND c.failed = c.tolerated + 1
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT c.total, c.tolerated, c.succeeded, c.failed,
       (SELECT coalesce(jsonb_agg(to_jsonb(m)), '[]') FROM alert m) AS messages
FROM counted c;

-- name: cancelled_group_done
-- In a batch being cancelled, after one of its instances ended: the group, if the cancel closed
-- it and no other instance still runs — then its children's fan-in counts it (a teardown child
-- starts). A statement of its own, after count_map_item: its snapshot sees every instance that
-- ended before the counter row was released, so exactly one ending instance finds it done.
SELECT g.task_id
FROM task_log g
WHERE g.batch_id = :batch_id AND g.task_id = :task_id AND g.map_index = -1
  AND g.status = 'CANCELLED'
  AND NOT EXISTS (SELECT 1 FROM task_log i
                  WHERE i.batch_id = :batch_id AND i.task_id = :task_id AND i.map_index >= 0
                    AND i.status = 'PROCESSING');

-- name: decide_group
-- The group's one decision, after its last instance was counted (a statement of its own, so its
-- snapshot sees every other instance, committed before the counter row was released): its
-- outputs in index order (null for a failed item), and on ERROR the first failed instance as
-- the root cause. Fenced: an open group only (a cancelled batch closed it already).
UPDATE task_log g
SET status = CAST(:status AS task_status), finished_at = :now, error = :error,
    output = (SELECT jsonb_agg(i.output ORDER BY i.map_index) FROM task_log i
              WHERE i.batch_id = g.batch_id AND i.task_id = g.task_id AND i.map_index >= 0),
    root_cause_log_id = CASE WHEN :status = 'ERROR' THEN (
        SELECT min(i.log_id) FROM task_log i
        WHERE i.batch_id = g.batch_id AND i.task_id = g.task_id AND i.map_index >= 0
          AND i.status IN ('ERROR', 'CANCELLED')) END
WHERE g.batch_id = :batch_id AND g.task_id = :task_id AND g.map_index = -1
  AND g.status = 'PROCESSING'
RETURNING g.log_id, g.task_id, g.status, g.root_cause_log_id;

-- name: reset_failed_items
-- rerun --failed-items: the decided group opens again, its failed instances go (their attempts
-- stay in task_attempts) and come back NEW with the same items and run_task messages, and the
-- counters forget them. Returns the new instances and their messages.
WITH group_row AS (
    UPDATE task_log g
    SET status = 'PROCESSING', finished_at = NULL, output = NULL, error = NULL,
        root_cause_log_id = NULL
    WHERE g.batch_id = :batch_id AND g.task_id = :task_id AND g.map_index = -1
      AND g.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'UPSTREAM_FAILED')
    RETURNING g.log_id
),
removed AS (
    DELETE FROM task_log i
    WHERE i.batch_id = :batch_id AND i.task_id = :task_id AND i.map_index >= 0
      AND i.status IN ('ERROR', 'CANCELLED') AND EXISTS (SELECT 1 FROM group_row)
    RETURNING i.pipeline, i.batch_id, i.task_id, i.map_index, i.item
),
counters AS (
    UPDATE map_groups m SET failed = 0
    WHERE m.batch_id = :batch_id AND m.task_id = :task_id AND EXISTS (SELECT 1 FROM group_row)
),
instances AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, map_index, item, status, created_at)
    SELECT r.pipeline, r.batch_id, r.task_id, r.map_index, r.item, 'NEW', :now FROM removed r
    RETURNING log_id, pipeline, batch_id, task_id, map_index, status, root_cause_log_id
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic, m.payload, m.attributes, :now, :now, i.log_id
    FROM instances i
    CROSS JOIN LATERAL dagrelay_run_task_message(i.pipeline, i.batch_id, :task, i.map_index) m
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT count(*) FROM group_row) AS reopened,
       (SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.log_id), '[]') FROM instances i)
           AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages;

-- name: map_group_counts
-- A batch's groups and their counters (status, explain, the dashboard).
SELECT t.name AS task, m.total, m.succeeded, m.failed,
       (SELECT count(*) FROM task_log i
        WHERE i.batch_id = m.batch_id AND i.task_id = m.task_id AND i.map_index >= 0
          AND i.status IN ('PROCESSING', 'RETRY')) AS running
FROM map_groups m
JOIN batches b ON b.pipeline = m.pipeline AND b.batch_id = m.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = m.task_id
WHERE m.pipeline = :pipeline AND m.batch_id = :batch_id
ORDER BY t.name;

-- name: resume_batch
-- A rerun of failed items: the batch runs again. Checked: never a CANCELLING batch (the rerun
-- would undo the cancel); no row back means the batch was not in a status a rerun may leave.
UPDATE batches SET status = 'RUNNING', finished_at = NULL
WHERE pipeline = :pipeline AND batch_id = :batch_id
  AND status IN ('RUNNING', 'SUCCESS', 'FAILED', 'CANCELLED')
RETURNING batch_id;

-- name: resume_groups
-- resume of a CANCELLED batch: each group the cancel closed after it had its instances opens
-- again (PROCESSING), its CANCELLED instances go (their attempts stay in task_attempts) and come
-- back NEW with the same items and run_task messages, and its counters are recounted from the
-- instances that ended (SUCCESS, ERROR). Returns the new instances, their messages, and every
-- reopened group's counters: a group with nothing left to run is decided by the engine now.
WITH reopened AS (
    UPDATE task_log g
    SET status = 'PROCESSING', finished_at = NULL, output = NULL, error = NULL,
        root_cause_log_id = NULL
    WHERE g.pipeline = :pipeline AND g.batch_id = :batch_id AND g.map_index = -1
      AND g.status = 'CANCELLED'
      AND EXISTS (SELECT 1 FROM task_log i
                  WHERE i.batch_id = g.batch_id AND i.task_id = g.task_id AND i.map_index >= 0)
    RETURNING g.log_id, g.task_id
),
removed AS (
    DELETE FROM task_log i USING reopened g
    WHERE i.batch_id = :batch_id AND i.task_id = g.task_id AND i.map_index >= 0
      AND i.status = 'CANCELLED'
    RETURNING i.pipeline, i.batch_id, i.task_id, i.map_index, i.item
),
counters AS (
    UPDATE map_groups m
    SET succeeded = c.succeeded, failed = c.failed
    FROM (SELECT g.task_id,
                 count(*) FILTER (WHERE i.status = 'SUCCESS') AS succeeded,
                 count(*) FILTER (WHERE i.status = 'ERROR') AS failed
          FROM reopened g
          JOIN task_log i ON i.batch_id = :batch_id AND i.task_id = g.task_id
                         AND i.map_index >= 0
          GROUP BY g.task_id) c
    WHERE m.batch_id = :batch_id AND m.task_id = c.task_id
    RETURNING m.task_id, m.total, m.tolerated, m.succeeded, m.failed
),
instances AS (
    INSERT INTO task_log (pipeline, batch_id, task_id, map_index, item, status, created_at)
    SELECT r.pipeline, r.batch_id, r.task_id, r.map_index, r.item, 'NEW', :now FROM removed r
    RETURNING log_id, pipeline, batch_id, task_id, map_index, status, root_cause_log_id
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT :topic, m.payload, m.attributes, :now, :now, i.log_id
    FROM instances i
    JOIN batches b ON b.pipeline = i.pipeline AND b.batch_id = i.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = i.task_id
    CROSS JOIN LATERAL dagrelay_run_task_message(i.pipeline, i.batch_id, t.name, i.map_index) m
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.task_id), '[]') FROM counters c)
           AS groups,
       (SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.log_id), '[]') FROM instances i)
           AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages;

-- name: map_instances
-- The instances of a mapped task in a batch, by index (the dashboard's task page).
SELECT i.map_index, i.status::text AS status, i.attempt, i.item, i.started_at, i.finished_at,
       i.error
FROM batches b
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = :task
JOIN task_log i ON i.batch_id = b.batch_id AND i.task_id = t.task_id AND i.map_index >= 0
WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
ORDER BY i.map_index
LIMIT :limit;

-- name: version_task_mapped
-- Whether the version's task of that name is mapped (a batch cannot start at one).
SELECT map IS NOT NULL FROM version_tasks WHERE version_id = :version_id AND name = :task;
