# Cloud Scheduler publishes to the events topic: the sweep every minute, and a start_batch per
# scheduled pipeline. Pub/Sub targets publish as Cloud Scheduler's service agent; the messages
# then reach the router through the push subscription like any other.

resource "google_cloud_scheduler_job" "sweep" {
  name        = "${local.prefix}-sweep"
  region      = var.region
  description = "dagrelay sweep: expired leases, the outbox relay, lost messages, idle batches."
  schedule    = var.sweep_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.events.id
    data       = base64encode(jsonencode({ action = "sweep" }))
    attributes = { action = "sweep" }
  }

  depends_on = [google_project_service.apis]
}

# One job per scheduled pipeline. The message is fixed when Terraform writes it: batch_id cannot
# contain the run's date, so every run sends the same (pipeline, batch_id), and dagrelay starts
# that batch once and acknowledges later runs as duplicates. README.md, "Scheduled pipelines",
# says how to get one batch per run.
resource "google_cloud_scheduler_job" "pipeline" {
  for_each = var.scheduled_pipelines

  # Job ids allow letters, digits, - and _ only.
  name        = "${local.prefix}-start-${replace(each.key, ".", "-")}"
  region      = var.region
  description = "dagrelay: start a batch of pipeline ${each.key}."
  schedule    = each.value.schedule
  time_zone   = each.value.time_zone

  pubsub_target {
    topic_name = google_pubsub_topic.events.id
    data = base64encode(jsonencode({
      action       = "start_batch"
      pipeline     = each.key
      batch_id     = each.value.batch_id
      params       = each.value.params
      triggered_by = "cloud-scheduler:${local.prefix}-start-${replace(each.key, ".", "-")}"
    }))
    attributes = { action = "start_batch" }
  }

  depends_on = [google_project_service.apis]
}
