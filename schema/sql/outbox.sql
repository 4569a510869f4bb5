-- The outbox: what the relay (dagrelay.store.outbox) claims, and how it records a publish.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: claim_unpublished_outbox
-- The relay's share of outbox rows left unpublished (a crash after commit, a failed publish)
-- and of held rows now due (retries, polls). Claimed with a lease, not a lock held open: the
-- claim commits before the publish, so no row lock is held across the network call. SKIP
-- LOCKED and the lease make concurrent relays take disjoint rows; a relay that dies after its
-- claim leaves rows that the next relay takes once their lease has run out.
WITH due AS (
    SELECT outbox_id
    FROM outbox
    WHERE published_at IS NULL
      AND (available_at <= :cutoff OR (available_at > created_at AND available_at <= :now))
      AND (relay_lease_until IS NULL OR relay_lease_until <= :now)
    ORDER BY last_error IS NOT NULL, outbox_id  -- rows that failed before never crowd out others
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox o
SET relay_lease_until = :lease_until
FROM due
WHERE o.outbox_id = due.outbox_id
RETURNING o.outbox_id, o.topic, o.payload, o.attributes;

-- name: mark_published
UPDATE outbox
SET published_at = :now, publish_attempts = publish_attempts + 1, last_error = NULL
WHERE outbox_id = ANY (CAST(:ids AS bigint[])) AND published_at IS NULL;

-- name: mark_publish_failed
-- Each row gets its own error (:errors, in the order of :ids); the lease is given back: the next
-- relay tries again.
UPDATE outbox o
SET publish_attempts = o.publish_attempts + 1, last_error = f.error, relay_lease_until = NULL
FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS f(outbox_id, error)
WHERE o.outbox_id = f.outbox_id AND o.published_at IS NULL;

-- name: next_held_outbox
-- When the earliest unpublished outbox row is due (dagrelay.testing moves its clock there).
SELECT min(available_at) AS due FROM outbox WHERE published_at IS NULL;

-- name: batch_trace_contexts
-- With tracing on: the trace context of each batch whose messages the relay publishes (stored
-- once, at the batch's start), copied into their traceparent attribute (store/outbox.py).
SELECT b.pipeline, b.batch_id, b.trace_context
FROM unnest(CAST(:pipelines AS text[]), CAST(:batch_ids AS text[])) AS k(pipeline, batch_id)
JOIN batches b ON b.pipeline = k.pipeline AND b.batch_id = k.batch_id;
