-- Named queries of the ingestion state machine (file_log). Loaded with queries.sql.
-- RECEIVED -> VALIDATED -> LOADED -> ARCHIVED, or -> REJECTED from RECEIVED/VALIDATED.
-- Every transition is a checked write: WHERE file_id AND status = :expected AND updated_at =
-- :token (the updated_at the caller last wrote or read). A re-claim of a stale row moves
-- updated_at, so a late write from the worker it replaced finds nothing to update.

-- name: ingest_claim_file
-- The first notification for an object claims it; a duplicate gets no row back.
INSERT INTO file_log (bucket, name, generation, md5, size_bytes, source, target_table,
                      status, received_at, updated_at)
VALUES (:bucket, :name, :generation, :md5, :size_bytes, :source, :target_table,
        'RECEIVED', :now, :now)
ON CONFLICT ON CONSTRAINT file_log_object_key DO NOTHING
RETURNING file_id, status::text AS status, updated_at;

-- name: ingest_get_file
SELECT file_id, bucket, name, generation, md5, size_bytes, source, target_table,
       status::text AS status, rows_loaded, error, updated_at
FROM file_log
WHERE bucket = :bucket AND name = :name AND generation = :generation;

-- name: ingest_reclaim_file
-- Take over a row whose worker stopped mid-way (nothing written since :stale_before) or whose
-- last attempt failed (error set by ingest_note_error).
UPDATE file_log SET updated_at = :now, error = NULL
WHERE file_id = :file_id
  AND status = CAST(:status AS file_status)
  AND status IN ('RECEIVED', 'VALIDATED', 'LOADED')
  AND (updated_at < :stale_before OR error IS NOT NULL)
RETURNING file_id, status::text AS status, updated_at;

-- name: ingest_mark_validated
UPDATE file_log SET status = 'VALIDATED', updated_at = :now
WHERE file_id = :file_id AND status = 'RECEIVED' AND updated_at = :token
RETURNING updated_at;

-- name: ingest_mark_loaded
UPDATE file_log SET status = 'LOADED', rows_loaded = :rows_loaded, updated_at = :now
WHERE file_id = :file_id AND status = 'VALIDATED' AND updated_at = :token
RETURNING updated_at;

-- name: ingest_mark_archived
UPDATE file_log SET status = 'ARCHIVED', updated_at = :now
WHERE file_id = :file_id AND status = 'LOADED' AND updated_at = :token
RETURNING updated_at;

-- name: ingest_mark_rejected
UPDATE file_log SET status = 'REJECTED', error = :error, updated_at = :now
WHERE file_id = :file_id AND status IN ('RECEIVED', 'VALIDATED') AND updated_at = :token
RETURNING updated_at;

-- name: ingest_note_error
-- A failed attempt (BigQuery, storage): the row keeps its status and becomes resumable at once.
UPDATE file_log SET error = :error
WHERE file_id = :file_id AND status = CAST(:status AS file_status) AND updated_at = :token;

-- name: ingest_loaded_files
-- The loaded files of some sources (for a trigger's requires); the caller derives each one's
-- month from its name.
SELECT source, name
FROM file_log
WHERE source = ANY(CAST(:sources AS text[]))
  AND status IN ('LOADED', 'ARCHIVED');

-- name: ingest_stale_files
-- Rows a sweep can resume: a worker stopped mid-way and no notification came back.
SELECT bucket, name, generation
FROM file_log
WHERE status IN ('RECEIVED', 'VALIDATED', 'LOADED') AND updated_at < :stale_before
ORDER BY updated_at
LIMIT :limit;
