-- Assets (ARCHITECTURE.md, "Assets"): the events a task's success writes for the assets it
-- updates, the asset schedules they start batches of, and the reads of `dagrelay assets` and
-- the dashboard's asset graph. Loaded by dagrelay.store.queries.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: record_asset_events
-- In the transaction of a completion: one event per asset each of :task_ids (a task's row, or a
-- mapped task's group row, ended SUCCESS) updates, in its batch's version. The partition is the
-- row's output "asset_partition", else the batch's param of that name; an output with
-- "asset_updated": false updated nothing. UNIQUE (asset, log_id) makes a repeat a no-op. Then
-- the row of every asset schedule waiting for one of these assets is locked, in one order: the
-- caller decides them in statements of their own (each with a fresh snapshot, so of two
-- completions at the same instant the one that locks second sees the first's events).
WITH events AS (
    INSERT INTO asset_events (asset, pipeline, batch_id, task_id, task, log_id, partition_key,
                              created_at)
    SELECT u.asset, tl.pipeline, tl.batch_id, tl.task_id, t.name, tl.log_id,
           coalesce(CASE WHEN jsonb_typeof(tl.output -> 'asset_partition') = 'string'
                         THEN tl.output ->> 'asset_partition' END,
                    CASE WHEN jsonb_typeof(b.params -> 'asset_partition') = 'string'
                         THEN b.params ->> 'asset_partition' END),
           :now
    FROM task_log tl
    JOIN batches b ON b.pipeline = tl.pipeline AND b.batch_id = tl.batch_id
    JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id
    CROSS JOIN LATERAL unnest(t.updates) AS u(asset)
    WHERE tl.pipeline = :pipeline AND tl.batch_id = :batch_id
      AND tl.task_id = ANY (CAST(:task_ids AS integer[])) AND tl.map_index = -1
      AND tl.status = 'SUCCESS'
      AND coalesce(tl.output -> 'asset_updated', 'true'::jsonb) <> 'false'::jsonb
    ORDER BY tl.task_id, u.asset
    ON CONFLICT (asset, log_id) DO NOTHING
    RETURNING asset
)
SELECT s.pipeline
FROM asset_schedules s
WHERE s.assets && ARRAY(SELECT asset FROM events) AND NOT s.paused
ORDER BY s.pipeline
FOR UPDATE OF s;

-- name: asset_schedule_state
-- A (locked) asset schedule as the rule reads it.
SELECT pipeline, assets, batch_id_template, runs, paused
FROM asset_schedules WHERE pipeline = :pipeline;

-- name: asset_pending_events
-- The events of the assets a schedule waits for that it has not consumed (since it was made).
SELECT e.event_id, e.asset, e.pipeline, e.batch_id, e.task, e.partition_key
FROM asset_schedules s
JOIN asset_events e ON e.asset = ANY (s.assets) AND e.event_id > s.since_event_id
WHERE s.pipeline = :pipeline
  AND NOT EXISTS (SELECT 1 FROM asset_triggers c
                  WHERE c.pipeline = s.pipeline AND c.event_id = e.event_id)
ORDER BY e.event_id;

-- name: fire_asset_schedule
-- One asset-triggered batch (created by the caller in this transaction): the checked write of
-- the schedule's run counter (run - 1 -> run) and its events consumed (asset_triggers; the
-- primary key refuses an event consumed twice). consumed < the events given: the caller rolls
-- back.
WITH advanced AS (
    UPDATE asset_schedules
    SET runs = :run, last_batch_id = :batch_id, last_triggered_at = :now, last_error = NULL
    WHERE pipeline = :pipeline AND runs = CAST(:run AS bigint) - 1 AND NOT paused
    RETURNING pipeline
),
consumed AS (
    INSERT INTO asset_triggers (pipeline, event_id, batch_id, created_at)
    SELECT a.pipeline, e.event_id, :batch_id, :now
    FROM advanced a CROSS JOIN unnest(CAST(:event_ids AS bigint[])) AS e(event_id)
    ON CONFLICT DO NOTHING
    RETURNING event_id
)
SELECT (SELECT count(*) FROM consumed) AS consumed;

-- name: asset_schedule_error
-- Why a schedule cannot start the batch its events ask for (a template that gives no valid
-- batch id): written once, its events stay pending.
UPDATE asset_schedules SET last_error = :error
WHERE pipeline = :pipeline AND last_error IS DISTINCT FROM :error
RETURNING pipeline;

-- name: upsert_asset_schedule
-- `pipeline apply`: the file's on_assets. A new schedule waits for events from now on
-- (since_event_id), and `paused` only when the row is created. Nothing back: nothing changed.
INSERT INTO asset_schedules (pipeline, assets, batch_id_template, paused, since_event_id,
                             created_at, updated_at)
VALUES (:pipeline, CAST(:assets AS text[]), :batch_id_template, :paused,
        (SELECT coalesce(max(event_id), 0) FROM asset_events), :now, :now)
ON CONFLICT (pipeline) DO UPDATE
SET assets = EXCLUDED.assets, batch_id_template = EXCLUDED.batch_id_template,
    updated_at = EXCLUDED.updated_at
WHERE (asset_schedules.assets, asset_schedules.batch_id_template)
      IS DISTINCT FROM (EXCLUDED.assets, EXCLUDED.batch_id_template)
RETURNING (xmax = 0) AS created;

-- name: delete_asset_schedule
DELETE FROM asset_schedules WHERE pipeline = :pipeline RETURNING pipeline;

-- name: asset_schedule_row
SELECT pipeline, assets, batch_id_template, paused FROM asset_schedules
WHERE pipeline = :pipeline;

-- name: pause_asset_schedule
UPDATE asset_schedules SET paused = :paused, updated_at = :now
WHERE pipeline = :pipeline AND paused <> :paused RETURNING pipeline;


-- == Reads (dagrelay assets, the dashboard's asset graph) =======================================

-- name: asset_list
-- Every asset a live task updates, a schedule waits for or an event names: its producers
-- (pipeline/task), its consumers (pipelines), its events and its last update.
WITH named AS (
    SELECT u.asset FROM tasks t CROSS JOIN LATERAL unnest(t.updates) AS u(asset)
    UNION
    SELECT u.asset FROM asset_schedules s CROSS JOIN LATERAL unnest(s.assets) AS u(asset)
    UNION
    SELECT DISTINCT asset FROM asset_events
)
SELECT n.asset,
       coalesce((SELECT array_agg(t.pipeline || '/' || t.name ORDER BY t.pipeline, t.name)
                 FROM tasks t WHERE n.asset = ANY (t.updates)), '{}') AS producers,
       coalesce((SELECT array_agg(s.pipeline ORDER BY s.pipeline)
                 FROM asset_schedules s WHERE n.asset = ANY (s.assets)), '{}') AS consumers,
       (SELECT count(*) FROM asset_events e WHERE e.asset = n.asset) AS events,
       l.created_at AS last_updated_at, l.pipeline AS last_pipeline, l.batch_id AS last_batch_id,
       l.partition_key AS last_partition
FROM named n
LEFT JOIN LATERAL (SELECT e.created_at, e.pipeline, e.batch_id, e.partition_key
                   FROM asset_events e WHERE e.asset = n.asset
                   ORDER BY e.event_id DESC LIMIT 1) l ON true
ORDER BY n.asset;

-- name: asset_schedule_list
-- Every asset schedule, with the assets that have an event it has not consumed yet.
SELECT s.pipeline, s.assets, s.batch_id_template, s.paused, s.runs, s.last_batch_id,
       s.last_triggered_at, s.last_error,
       coalesce((SELECT array_agg(DISTINCT e.asset)
                 FROM asset_events e
                 WHERE e.asset = ANY (s.assets) AND e.event_id > s.since_event_id
                   AND NOT EXISTS (SELECT 1 FROM asset_triggers c
                                   WHERE c.pipeline = s.pipeline AND c.event_id = e.event_id)),
                '{}') AS pending
FROM asset_schedules s
ORDER BY s.pipeline;

-- name: asset_batch_triggers
-- The events that started an asset-triggered batch.
SELECT e.asset, e.pipeline, e.batch_id, e.task, e.partition_key, e.created_at, e.event_id
FROM asset_triggers c JOIN asset_events e ON e.event_id = c.event_id
WHERE c.pipeline = :pipeline AND c.batch_id = :batch_id
ORDER BY e.asset, e.event_id;
