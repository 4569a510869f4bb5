-- Messages the router could not use: rejected (malformed, unknown) and dead-lettered.
-- Times are always the :now parameter (the engine's injectable clock), never now().

-- name: record_rejected_message
-- A redelivery (same message id, same data) adds no row. Message ids repeat (an emulator restart
-- numbers them from 1 again), so a different message under a known id is a row of its own.
INSERT INTO rejected_messages (message_id, received_at, attributes, data, payload_bytes,
                               payload_sha256, reason)
VALUES (:message_id, :now, CAST(:attributes AS jsonb), :data, :payload_bytes, :payload_sha256,
        :reason)
ON CONFLICT (message_id, payload_sha256) DO NOTHING
RETURNING rejected_id;

-- name: record_dead_letter
-- Keyed like record_rejected_message: a redelivery adds no row, a reused message id does.
INSERT INTO dead_letters (message_id, received_at, source_subscription, delivery_attempts,
                          action, pipeline, batch_id, task, attributes, data, payload_bytes,
                          payload_sha256, reason)
VALUES (:message_id, :now, :source_subscription, :delivery_attempts, :action, :pipeline,
        :batch_id, :task, CAST(:attributes AS jsonb), :data, :payload_bytes, :payload_sha256,
        :reason)
ON CONFLICT (message_id, payload_sha256) DO NOTHING
RETURNING dead_letter_id;
