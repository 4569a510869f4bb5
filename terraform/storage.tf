# The bucket of ingested files. Ingestion works under four prefixes of it (dagrelay.ingest):
# inbox/<source>/ (files land here; each new object is announced on the events topic), staging/
# (the Parquet it loads), archive/ (loaded files) and rejected/ (files that failed validation, kept
# for inspection). Private: uniform bucket-level access, public access prevention enforced, no
# ACLs; versioned, with lifecycle rules per prefix that bound what is kept.

locals {
  # prefix -> days until deleted, days until COLDLINE (null: never)
  prefix_lifecycle = {
    "inbox/"    = { delete_after_days = var.inbox_retention_days, coldline_after_days = null }
    "staging/"  = { delete_after_days = var.inbox_retention_days, coldline_after_days = null }
    "rejected/" = { delete_after_days = var.rejected_retention_days, coldline_after_days = null }
    "archive/"  = { delete_after_days = null, coldline_after_days = var.archive_coldline_after_days }
  }
}

data "google_storage_project_service_account" "gcs" {
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs (enable Data Access logs for storage.googleapis.com); usage-log buckets are the legacy mechanism and need a bucket of their own.
  for_each = local.buckets

  name     = each.value
  location = var.region

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets

  versioning {
    enabled = true
  }

  # Overwritten or deleted versions are kept for a while, then removed.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = { for prefix, rule in local.prefix_lifecycle : prefix => rule.delete_after_days if rule.delete_after_days != null }
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [lifecycle_rule.key]
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = { for prefix, rule in local.prefix_lifecycle : prefix => rule.coldline_after_days if rule.coldline_after_days != null }
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [lifecycle_rule.key]
      }
      action {
        type          = "SetStorageClass"
        storage_class = "COLDLINE"
      }
    }
  }

  depends_on = [google_project_service.apis]
}

# Every new object under inbox/ is announced on the events topic (the router's ingestion path);
# ingestion's own writes (staging/, archive/, rejected/) are not.
resource "google_storage_notification" "inbox" {
  bucket             = google_storage_bucket.data["inbox"].name
  topic              = google_pubsub_topic.events.id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = "inbox/"

  depends_on = [google_pubsub_topic_iam_member.events_gcs_agent]
}
