-- The outbox: what the relay (dagrelay.store.outbox) claims, and how it records a publish.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: lock_unpublished_outbox
-- The relay's share of outbox rows left unpublished (crash after commit, failed publish).
-- SKIP LOCKED: concurrent sweeps take disjoint rows.
SELECT outbox_id, topic, payload, attributes
FROM outbox
WHERE published_at IS NULL
  AND (available_at <= :cutoff OR (available_at > created_at AND available_at <= :now))
ORDER BY outbox_id
LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: mark_published
UPDATE outbox
SET published_at = :now, publish_attempts = publish_attempts + 1, last_error = NULL
WHERE outbox_id = ANY (CAST(:ids AS bigint[])) AND published_at IS NULL;

-- name: mark_publish_failed
UPDATE outbox
SET publish_attempts = publish_attempts + 1, last_error = :error
WHERE outbox_id = ANY (CAST(:ids AS bigint[])) AND published_at IS NULL;
