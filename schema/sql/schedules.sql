-- Schedules (the schedules table): what the sweep evaluates, what `pipeline apply` writes and
-- `pipeline export` reads, and the `dagrelay schedule` verbs. Loaded with queries.sql.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: due_schedules
-- Schedules whose next tick is due, or not computed yet (NULL: a new row, a changed cron).
-- Schedules in error come last: a bad row is tried again at every sweep, but it never takes
-- the place of a healthy one (blast radius of one).
SELECT pipeline FROM schedules
WHERE NOT paused AND (next_run_at IS NULL OR next_run_at <= :now)
ORDER BY last_error IS NOT NULL, next_run_at NULLS FIRST, pipeline
LIMIT :limit;

-- name: schedule_row
SELECT pipeline, cron, timezone, batch_id_template, catchup, catchup_limit,
       max_active_batches, overlap, paused, next_run_at, last_tick_at, last_run_at,
       last_batch_id, last_error
FROM schedules WHERE pipeline = :pipeline;

-- name: running_batches
SELECT count(*) FROM batches WHERE pipeline = :pipeline AND status = 'RUNNING';

-- name: advance_schedule
-- The checked write that makes a tick start once: it lands only if no other sweep advanced
-- the schedule since it was read, and the schedule is not paused meanwhile.
UPDATE schedules
SET next_run_at = :next_run_at,
    last_tick_at = coalesce(CAST(:last_tick_at AS timestamptz), last_tick_at),
    last_run_at = CASE WHEN CAST(:last_batch_id AS text) IS NULL THEN last_run_at
                       ELSE CAST(:now AS timestamptz) END,
    last_batch_id = coalesce(CAST(:last_batch_id AS text), last_batch_id),
    last_error = NULL
WHERE pipeline = :pipeline AND NOT paused
  AND next_run_at IS NOT DISTINCT FROM CAST(:due AS timestamptz)
RETURNING pipeline;

-- name: schedule_error
-- A schedule that cannot start its tick (a bad template, no tasks, a batch the database
-- refuses) says why and keeps the tick due; one whose cron never fires (:never) also loses its
-- next_run_at (NULL: computed again once the cron or zone changes). Fenced by the next_run_at
-- that was evaluated, so an error never overwrites what a newer sweep wrote.
UPDATE schedules
SET last_error = :error,
    next_run_at = CASE WHEN CAST(:never AS boolean) THEN NULL ELSE next_run_at END
WHERE pipeline = :pipeline
  AND next_run_at IS NOT DISTINCT FROM CAST(:due AS timestamptz)
  AND (last_error IS DISTINCT FROM :error
       OR (CAST(:never AS boolean) AND next_run_at IS NOT NULL))
RETURNING pipeline;

-- name: upsert_schedule
-- `pipeline apply`: writes the file's schedule; `paused` only when the row is created (after
-- that, pause and resume are the operator's). Returns nothing when nothing changed.
INSERT INTO schedules (pipeline, cron, timezone, batch_id_template, catchup, catchup_limit,
                       max_active_batches, overlap, paused, created_at, updated_at)
VALUES (:pipeline, :cron, :timezone, :batch_id_template, :catchup, :catchup_limit,
        :max_active_batches, :overlap, :paused, :now, :now)
ON CONFLICT (pipeline) DO UPDATE
SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
    batch_id_template = EXCLUDED.batch_id_template, catchup = EXCLUDED.catchup,
    catchup_limit = EXCLUDED.catchup_limit, max_active_batches = EXCLUDED.max_active_batches,
    overlap = EXCLUDED.overlap, updated_at = EXCLUDED.updated_at
WHERE (schedules.cron, schedules.timezone, schedules.batch_id_template, schedules.catchup,
       schedules.catchup_limit, schedules.max_active_batches, schedules.overlap)
      IS DISTINCT FROM
      (EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.batch_id_template, EXCLUDED.catchup,
       EXCLUDED.catchup_limit, EXCLUDED.max_active_batches, EXCLUDED.overlap)
RETURNING (xmax = 0) AS created;

-- name: delete_schedule
DELETE FROM schedules WHERE pipeline = :pipeline RETURNING pipeline;

-- name: list_schedules
SELECT pipeline, cron, timezone, batch_id_template, catchup, catchup_limit,
       max_active_batches, overlap, paused, next_run_at, last_tick_at, last_run_at,
       last_batch_id, last_error
FROM schedules ORDER BY pipeline;

-- name: pause_schedule
UPDATE schedules SET paused = true, updated_at = :now
WHERE pipeline = :pipeline AND NOT paused RETURNING pipeline;

-- name: resume_schedule
-- Ticks that passed while paused are not started: the next sweep computes the next tick.
UPDATE schedules SET paused = false, next_run_at = NULL, updated_at = :now
WHERE pipeline = :pipeline AND paused RETURNING pipeline;
