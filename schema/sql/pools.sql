-- Named pools (dagrelay pool set/list; dagrelay.engine.pools). A pool's slot holders are the
-- PROCESSING attempts of its tasks, its queue the QUEUED ones (migrations/versions/0013_pools.py).
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: set_pool
-- Create or change a pool; a description left out keeps the one it has. Locks the pool's row,
-- so a claim in that pool waits for the new slot count.
INSERT INTO pools (name, slots, description, updated_at)
VALUES (:name, :slots, :description, :now)
ON CONFLICT (name) DO UPDATE
SET slots = EXCLUDED.slots, description = coalesce(EXCLUDED.description, pools.description),
    updated_at = EXCLUDED.updated_at
RETURNING name, slots, description;

-- name: release_pool
-- The run_task messages of the queued tasks the pool's free slots fit (after a raise).
SELECT outbox_id, topic, payload, attributes, available_at
FROM dagrelay_release_pool(:name, :topic, :now);

-- name: pool_rows
-- Every pool with its slots, the slots in use (PROCESSING attempts) and the tasks queued.
SELECT p.name, p.slots, p.description,
       coalesce((SELECT sum(h.pool_slots) FROM task_log h
                 WHERE h.limited AND h.status = 'PROCESSING' AND h.pool = p.name), 0)::integer
           AS in_use,
       (SELECT count(*) FROM task_log q
        WHERE q.queued_at IS NOT NULL AND q.status = 'QUEUED' AND q.pool = p.name)::integer
           AS queued
FROM pools p
ORDER BY p.name;
