-- Deadlines (migrations/versions/0020_deadlines.py; ARCHITECTURE.md, "Deadlines"): the
-- sweeper's step. A deadline is {"within_s", "after"} seconds after the batch's scheduled time
-- (params.scheduled_for; a batch that was not scheduled counts from its start) or its start.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: record_deadline_misses
-- The deadlines missed, each recorded once (deadline_misses_once) with its one alert, in one
-- statement. Checked: running batches and those finished in the last :window_s seconds (a
-- batch or a task that ended after its deadline, between two sweeps, is a miss too). A task's
-- end is its row's (map_index -1; a RETRY has none), else its batch's if the batch ended (a
-- task that never ran in a finished batch ended with it).
WITH batch AS (
    SELECT b.pipeline, b.batch_id, b.version_id, b.status, b.finished_at, p.deadline,
           CASE WHEN b.params ->> 'scheduled_for' ~ '^\d{4}-\d\d-\d\dT' THEN
                    CAST(b.params ->> 'scheduled_for' AS timestamptz)
           END AS scheduled_at,
           b.created_at
    FROM batches b
    LEFT JOIN pipelines p ON p.pipeline = b.pipeline
    WHERE b.status IN ('RUNNING', 'CANCELLING')
       OR b.finished_at >= CAST(:now AS timestamptz) - make_interval(secs => :window_s)
),
due AS (
    SELECT b.pipeline, b.batch_id, '' AS task, b.deadline,
           CASE WHEN b.deadline ->> 'after' = 'start' THEN b.created_at
                ELSE coalesce(b.scheduled_at, b.created_at) END
               + make_interval(secs => CAST(b.deadline ->> 'within_s' AS integer)) AS deadline_at,
           b.finished_at AS ended_at
    FROM batch b
    WHERE b.deadline IS NOT NULL
    UNION ALL
    SELECT b.pipeline, b.batch_id, t.name, t.deadline,
           CASE WHEN t.deadline ->> 'after' = 'start' THEN b.created_at
                ELSE coalesce(b.scheduled_at, b.created_at) END
               + make_interval(secs => CAST(t.deadline ->> 'within_s' AS integer)),
           CASE WHEN tl.status IN ('SUCCESS', 'ERROR', 'UPSTREAM_FAILED', 'SKIPPED', 'CANCELLED')
                THEN tl.finished_at
                ELSE b.finished_at END
    FROM batch b
    JOIN version_tasks t ON t.version_id = b.version_id AND t.deadline IS NOT NULL
    LEFT JOIN task_log tl
      ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id AND tl.map_index = -1
),
missed AS (
    INSERT INTO deadline_misses (pipeline, batch_id, task, deadline_at, missed_at, ended_at,
                                 fail)
    SELECT d.pipeline, d.batch_id, d.task, d.deadline_at, CAST(:now AS timestamptz), d.ended_at,
           coalesce(CAST(d.deadline ->> 'fail' AS boolean), false) AND d.ended_at IS NULL
    FROM due d
    WHERE d.deadline_at < CAST(:now AS timestamptz)
      AND (d.ended_at IS NULL OR d.ended_at > d.deadline_at)
    ORDER BY d.pipeline, d.batch_id, d.task
    ON CONFLICT ON CONSTRAINT deadline_misses_once DO NOTHING
    RETURNING miss_id, pipeline, batch_id, task, deadline_at, ended_at, fail
),
alerts AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at)
    SELECT CAST(:alerts_topic AS text),
           jsonb_build_object('kind', 'deadline_missed', 'pipeline', m.pipeline,
                              'batch_id', m.batch_id, 'task', nullif(m.task, ''),
                              'deadline_at', m.deadline_at, 'ended_at', m.ended_at,
                              'fails_task', m.fail, 'at', CAST(:now AS timestamptz)),
           CAST('{"kind": "deadline_missed"}' AS jsonb), CAST(:now AS timestamptz),
           CAST(:now AS timestamptz)
    FROM missed m
    ORDER BY m.miss_id
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.miss_id), '[]') FROM missed m)
           AS misses,
       (SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.outbox_id), '[]') FROM alerts a)
           AS messages;

-- name: take_deadline_failure
-- One missed deadline whose task must fail, taken once (a checked write: failed_at). Returns
-- the task's row as it is: the caller ends it (a running attempt is concluded; a waiting one
-- ends ERROR here, fail_waiting_task) or, if it ended meanwhile, leaves it.
WITH taken AS (
    UPDATE deadline_misses m
    SET failed_at = CAST(:now AS timestamptz)
    WHERE m.miss_id = (SELECT miss_id FROM deadline_misses
                       WHERE fail AND failed_at IS NULL
                       ORDER BY missed_at, miss_id
                       LIMIT 1
                       FOR UPDATE SKIP LOCKED)
      AND m.failed_at IS NULL
    RETURNING m.miss_id, m.pipeline, m.batch_id, m.task, m.deadline_at
)
SELECT k.miss_id, k.pipeline, k.batch_id, k.task, k.deadline_at,
       tl.log_id, tl.status::text AS status, tl.attempt, tl.map_index, t.task_id, t.name,
       t.timeout_s, t.max_retries, t.retry_delay_s, t.retry_backoff, t.retry_max_delay_s,
       tl.limited, t.map IS NOT NULL AS mapped, b.status::text AS batch_status
FROM taken k
JOIN batches b ON b.pipeline = k.pipeline AND b.batch_id = k.batch_id
JOIN version_tasks t ON t.version_id = b.version_id AND t.name = k.task
LEFT JOIN task_log tl ON tl.batch_id = k.batch_id AND tl.task_id = t.task_id
                     AND tl.map_index = -1;

-- name: fail_waiting_task
-- A task waiting to run (NEW, QUEUED, due or not RETRY) in a RUNNING batch ends ERROR: its
-- deadline passed and says so. A QUEUED one leaves its pool's queue. With its one alert.
WITH running AS (
    SELECT 1 FROM batches b
    WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id AND b.status = 'RUNNING'
    FOR SHARE OF b
),
done AS (
    UPDATE task_log tl
    SET status = 'ERROR', finished_at = :now, next_attempt_at = NULL, queued_at = NULL,
        error = :error
    WHERE tl.log_id = :log_id AND tl.status IN ('NEW', 'QUEUED', 'RETRY')
      AND EXISTS (SELECT 1 FROM running)
    RETURNING tl.log_id, tl.task_id, tl.pipeline, tl.batch_id, tl.status, tl.attempt,
              tl.map_index
),
messages AS (
    INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id)
    SELECT CAST(:alerts_topic AS text),
           jsonb_build_object('kind', 'task_failed', 'pipeline', d.pipeline,
                              'batch_id', d.batch_id, 'task', CAST(:task AS text),
                              'attempt', d.attempt, 'error', CAST(:error AS text),
                              'log_id', d.log_id, 'root_cause', CAST(:task AS text),
                              'at', CAST(:now AS timestamptz)),
           CAST('{"kind": "task_failed"}' AS jsonb), CAST(:now AS timestamptz),
           CAST(:now AS timestamptz), d.log_id
    FROM done d
    RETURNING outbox_id, topic, payload, attributes, available_at
)
SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.log_id), '[]') FROM done c) AS tasks,
       (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.outbox_id), '[]') FROM messages m)
           AS messages;

-- name: batch_deadlines
-- A batch's deadlines and whether each was missed, for status and explain: the batch's own
-- (task '') and each task's, from its pipeline and its version, with when what it bounds ended
-- (as record_deadline_misses reads it).
WITH b AS (
    SELECT b.pipeline, b.batch_id, b.version_id, b.created_at, b.finished_at, p.deadline,
           CASE WHEN b.params ->> 'scheduled_for' ~ '^\d{4}-\d\d-\d\dT' THEN
                    CAST(b.params ->> 'scheduled_for' AS timestamptz)
           END AS scheduled_at
    FROM batches b LEFT JOIN pipelines p ON p.pipeline = b.pipeline
    WHERE b.pipeline = :pipeline AND b.batch_id = :batch_id
),
d AS (
    SELECT '' AS task, b.deadline,
           CASE WHEN b.deadline ->> 'after' = 'start' THEN b.created_at
                ELSE coalesce(b.scheduled_at, b.created_at) END
               + make_interval(secs => CAST(b.deadline ->> 'within_s' AS integer)) AS deadline_at,
           b.finished_at AS ended_at
    FROM b WHERE b.deadline IS NOT NULL
    UNION ALL
    SELECT t.name, t.deadline,
           CASE WHEN t.deadline ->> 'after' = 'start' THEN b.created_at
                ELSE coalesce(b.scheduled_at, b.created_at) END
               + make_interval(secs => CAST(t.deadline ->> 'within_s' AS integer)),
           CASE WHEN tl.status IN ('SUCCESS', 'ERROR', 'UPSTREAM_FAILED', 'SKIPPED', 'CANCELLED')
                THEN tl.finished_at
                ELSE b.finished_at END
    FROM b
    JOIN version_tasks t ON t.version_id = b.version_id AND t.deadline IS NOT NULL
    LEFT JOIN task_log tl
      ON tl.batch_id = b.batch_id AND tl.task_id = t.task_id AND tl.map_index = -1
)
SELECT d.task, coalesce(m.deadline_at, d.deadline_at) AS deadline_at, m.missed_at, d.ended_at,
       coalesce(CAST(d.deadline ->> 'fail' AS boolean), false) AS fail, m.failed_at
FROM d
LEFT JOIN deadline_misses m
  ON m.pipeline = :pipeline AND m.batch_id = :batch_id AND m.task = d.task
ORDER BY d.task <> '', d.deadline_at, d.task;
