# Cloud Scheduler publishes the sweep to the events topic every minute. Pipeline schedules live in
# the database (the schedules table) and the sweep starts their due ticks, so there is no job per
# pipeline. Pub/Sub targets publish as Cloud Scheduler's service agent; the message then reaches
# the router through the push subscription like any other.

resource "google_cloud_scheduler_job" "sweep" {
  name        = "${local.prefix}-sweep"
  region      = var.region
  description = "dagrelay sweep: expired leases, the outbox relay, lost messages, idle batches, due schedule ticks."
  schedule    = var.sweep_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.events.id
    data       = base64encode(jsonencode({ action = "sweep" }))
    attributes = { action = "sweep" }
  }

  depends_on = [google_project_service.apis]
}
