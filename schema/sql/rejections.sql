-- Messages the router could not use: rejected (malformed, unknown) and dead-lettered.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: record_rejected_message
INSERT INTO rejected_messages (message_id, received_at, attributes, data, reason)
VALUES (:message_id, :now, CAST(:attributes AS jsonb), :data, :reason)
ON CONFLICT (message_id) DO NOTHING;

-- name: record_dead_letter
INSERT INTO dead_letters (message_id, received_at, source_subscription, delivery_attempts,
                          action, pipeline, batch_id, task, attributes, data, reason)
VALUES (:message_id, :now, :source_subscription, :delivery_attempts, :action, :pipeline,
        :batch_id, :task, CAST(:attributes AS jsonb), :data, :reason)
ON CONFLICT (message_id) DO NOTHING
RETURNING dead_letter_id;

-- name: batch_dead_letters
SELECT received_at, action, pipeline, task, delivery_attempts, source_subscription, reason
FROM dead_letters
WHERE batch_id = :batch_id AND (CAST(:pipeline AS text) IS NULL OR pipeline = :pipeline)
ORDER BY received_at;
