-- What an operator alerts on, computed by the sweep once a minute (engine/metrics.py) and
-- logged as structured lines that Terraform's log-based metrics read (terraform/metrics.tf).
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: operations_metrics
-- One row: work in flight and waiting, the oldest waits, running and recently ended batches.
SELECT
    (SELECT count(*) FROM task_log WHERE status = 'PROCESSING') AS tasks_in_flight,
    (SELECT count(*) FROM task_log WHERE status = 'QUEUED') AS tasks_queued,
    (SELECT coalesce(extract(epoch FROM CAST(:now AS timestamptz) - min(available_at)), 0)
     FROM outbox WHERE published_at IS NULL AND available_at <= :now)::float8
        AS oldest_unpublished_s,
    (SELECT coalesce(extract(epoch FROM CAST(:now AS timestamptz) - min(queued_at)), 0)
     FROM task_log WHERE status = 'QUEUED')::float8 AS oldest_queued_s,
    (SELECT count(*) FROM batches WHERE status IN ('RUNNING', 'CANCELLING')) AS batches_running,
    (SELECT coalesce(extract(epoch FROM CAST(:now AS timestamptz) - min(created_at)), 0)
     FROM batches WHERE status IN ('RUNNING', 'CANCELLING'))::float8 AS oldest_running_batch_s,
    (SELECT count(*) FROM batches
     WHERE status = 'FAILED' AND finished_at > CAST(:since AS timestamptz)) AS batches_failed,
    (SELECT count(*) FROM batches
     WHERE finished_at > CAST(:since AS timestamptz)) AS batches_finished,
    (SELECT coalesce(max(extract(epoch FROM finished_at - created_at)), 0) FROM batches
     WHERE finished_at > CAST(:since AS timestamptz))::float8 AS batch_duration_max_s,
    (SELECT count(*) FROM task_log
     WHERE status = 'ERROR' AND finished_at > CAST(:since AS timestamptz)) AS tasks_failed;

-- name: pool_metrics
-- Per pool: attempts holding a slot, tasks queued, and how long the first in line has waited.
SELECT p.name AS pool, p.slots,
       count(tl.log_id) FILTER (WHERE tl.status = 'PROCESSING') AS holders,
       count(tl.log_id) FILTER (WHERE tl.status = 'QUEUED') AS queued,
       coalesce(extract(epoch FROM CAST(:now AS timestamptz)
                         - min(tl.queued_at) FILTER (WHERE tl.status = 'QUEUED')), 0)::float8
           AS oldest_queued_s
FROM pools p
LEFT JOIN task_log tl
    ON tl.pool = p.name AND tl.status IN ('PROCESSING', 'QUEUED')
GROUP BY p.name, p.slots
ORDER BY p.name;
