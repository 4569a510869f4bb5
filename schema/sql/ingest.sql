-- Named queries of ingestion's ledger (file_log). Loaded with queries.sql.
-- A file's steps run as tasks of its ingestion batch (dagrelay.ingest.handlers); file_log keeps
-- what happened to the object, and is what makes it loaded once:
--   RECEIVED -> VALIDATED -> LOADED -> ARCHIVED
--   RECEIVED -> DUPLICATE (same content already loaded for the source: never loaded again)
--   RECEIVED | VALIDATED -> REJECTED (invalid, unreadable, another bucket, a refused replacement)
-- Each transition is a checked write on the status it leaves: a repeated or late write (a
-- retried attempt, a zombie) finds nothing to update and says so.

-- name: ingest_claim_file
-- The first notification for an object records it; a repeated one gets no row back.
INSERT INTO file_log (bucket, name, generation, md5, size_bytes, source, target_table,
                      batch_id, status, received_at, updated_at)
VALUES (:bucket, :name, :generation, :md5, :size_bytes, :source, :target_table,
        :batch_id, 'RECEIVED', :now, :now)
ON CONFLICT ON CONSTRAINT file_log_object_key DO NOTHING
RETURNING file_id;

-- name: ingest_record_rejected
-- A notification ingestion refuses before reading anything (another bucket, an unsafe name).
INSERT INTO file_log (bucket, name, generation, md5, size_bytes, source, status, error,
                      received_at, updated_at)
VALUES (:bucket, :name, :generation, :md5, :size_bytes, :source, 'REJECTED', :error, :now, :now)
ON CONFLICT ON CONSTRAINT file_log_object_key DO NOTHING
RETURNING file_id;

-- name: ingest_get_file
SELECT file_id, bucket, name, generation, md5, source, target_table, batch_id,
       status::text AS status, rows_loaded, error, load_job, duplicate_of
FROM file_log
WHERE bucket = :bucket AND name = :name AND generation = :generation;

-- name: ingest_lock_source
-- Serialises the "is this content or name already loaded?" decisions of one source, so that two
-- copies arriving together cannot both decide to load.
SELECT pg_advisory_xact_lock(hashtextextended('dagrelay.ingest:' || :source, 0));

-- name: ingest_earlier_files
-- Other files of the source that are loaded or on their way (VALIDATED, LOADED, ARCHIVED) with
-- the same content, or under the same name (an earlier generation).
SELECT file_id, bucket, name, generation, md5, status::text AS status
FROM file_log
WHERE file_id <> :file_id
  AND status IN ('VALIDATED', 'LOADED', 'ARCHIVED')
  AND ((source = :source AND md5 = :md5) OR (bucket = :bucket AND name = :name))
ORDER BY file_id
LIMIT 20;

-- name: ingest_mark_validated
UPDATE file_log SET status = 'VALIDATED', md5 = :md5, updated_at = :now, error = NULL
WHERE file_id = :file_id AND status = 'RECEIVED'
RETURNING file_id;

-- name: ingest_mark_duplicate
UPDATE file_log SET status = 'DUPLICATE', md5 = :md5, duplicate_of = :duplicate_of,
                    error = :error, updated_at = :now
WHERE file_id = :file_id AND status = 'RECEIVED'
RETURNING file_id;

-- name: ingest_mark_rejected
UPDATE file_log SET status = 'REJECTED', error = :error, updated_at = :now
WHERE file_id = :file_id AND status IN ('RECEIVED', 'VALIDATED')
RETURNING file_id;

-- name: ingest_set_load_job
-- The one BigQuery job that may load this file: replaced only by whoever read the previous one
-- (which failed, so it loaded nothing).
UPDATE file_log SET load_job = :load_job, updated_at = :now
WHERE file_id = :file_id AND status = 'VALIDATED'
  AND load_job IS NOT DISTINCT FROM CAST(:previous AS text)
RETURNING file_id;

-- name: ingest_mark_loaded
UPDATE file_log SET status = 'LOADED', rows_loaded = :rows_loaded, updated_at = :now
WHERE file_id = :file_id AND status = 'VALIDATED' AND load_job = :load_job
RETURNING file_id;

-- name: ingest_mark_archived
UPDATE file_log SET status = 'ARCHIVED', updated_at = :now
WHERE file_id = :file_id AND status = 'LOADED'
RETURNING file_id;

-- name: ingest_loaded_files
-- The loaded files of some sources (for a trigger's requires); the caller derives each one's
-- month from its name.
SELECT source, name
FROM file_log
WHERE source = ANY(CAST(:sources AS text[]))
  AND status IN ('LOADED', 'ARCHIVED');
