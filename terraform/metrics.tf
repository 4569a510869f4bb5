# Operations metrics and their alerts. Once a minute the sweep (in the router) reads the database
# and logs structured lines (functions/dagrelay/engine/metrics.py):
#   - jsonPayload.metric = "dagrelay_state": tasks_in_flight, tasks_queued, oldest_unpublished_s,
#     oldest_queued_s, batches_running, oldest_running_batch_s, and over the last minute
#     batches_finished, batches_failed, batch_duration_max_s, tasks_failed;
#   - jsonPayload.metric = "dagrelay_pool" (one line per pool): pool, slots, holders, queued,
#     oldest_queued_s.
# Each gauge becomes a log-based distribution metric; the alerts read their 99th percentile over
# five minutes (about the largest of five sweeps). Task failures alert in monitoring.tf.

locals {
  sweep_logs = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${local.router_function}\"",
  ])

  # The state line's gauges: field => (unit, description).
  state_gauges = {
    tasks_in_flight        = ["1", "Task attempts PROCESSING (holding a lease)."]
    tasks_queued           = ["1", "Tasks QUEUED for a pool slot, max_active or max_parallel."]
    oldest_unpublished_s   = ["s", "Age of the oldest due outbox message not yet published."]
    oldest_queued_s        = ["s", "How long the longest-waiting QUEUED task has waited."]
    batches_running        = ["1", "Batches RUNNING or CANCELLING."]
    oldest_running_batch_s = ["s", "Age of the oldest batch still RUNNING or CANCELLING."]
    batch_duration_max_s   = ["s", "Longest duration of the batches that ended in the last minute."]
    batches_failed         = ["1", "Batches that ended FAILED in the last minute."]
  }
}

resource "google_logging_metric" "state" {
  for_each = local.state_gauges

  name        = "${local.prefix}-${replace(each.key, "_", "-")}"
  description = "dagrelay (the sweep's metrics line): ${each.value[1]}"
  filter      = "${local.sweep_logs} AND jsonPayload.metric=\"dagrelay_state\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = each.value[0]
    display_name = "dagrelay ${replace(each.key, "_", " ")}"
  }

  value_extractor = "EXTRACT(jsonPayload.${each.key})"

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 32
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "pool_queued" {
  name        = "${local.prefix}-pool-queued"
  description = "dagrelay (the sweep's metrics line per pool): tasks QUEUED in the pool."
  filter      = "${local.sweep_logs} AND jsonPayload.metric=\"dagrelay_pool\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "dagrelay pool queued"

    labels {
      key         = "pool"
      value_type  = "STRING"
      description = "The pool."
    }
  }

  value_extractor  = "EXTRACT(jsonPayload.queued)"
  label_extractors = { pool = "EXTRACT(jsonPayload.pool)" }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 32
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  # Alert when the gauge's recent largest value stays above its threshold.
  gauge_alerts = {
    oldest_unpublished_s = {
      title = "a due message is not being published"
      doc   = "A due outbox message has waited longer than the threshold: Pub/Sub refuses publishes (`outbox.last_error`), or the sweep does not run. `dagrelay status` shows the stuck tasks; the sweep republishes once the cause is gone."
    }
    oldest_queued_s = {
      title = "a task waits too long for a pool slot"
      doc   = "A QUEUED task has waited longer than the threshold: its pool is saturated. `dagrelay pool list` shows holders and queues; raise the pool's slots or find the attempts holding them."
    }
    oldest_running_batch_s = {
      title = "a batch has been running too long"
      doc   = "A batch has been RUNNING (or CANCELLING) longer than the threshold: a long task, a deferred job never done, or a queue. `dagrelay status BATCH_ID` and `dagrelay explain` say what it waits for."
    }
  }
}

resource "google_monitoring_alert_policy" "gauges" {
  for_each = local.gauge_alerts

  display_name          = "dagrelay: ${each.value.title}"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "dagrelay ${replace(each.key, "_", " ")} above ${var.operations_alerts[each.key]}"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.state[each.key].name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.operations_alerts[each.key]
      duration        = "300s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "${each.value.doc}\n\nLogs: `resource.labels.service_name=\"${local.router_function}\" AND jsonPayload.metric=\"dagrelay_state\"`."
  }
}

resource "google_monitoring_alert_policy" "sweep_missing" {
  display_name          = "dagrelay: the sweep is not running"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "No dagrelay metrics line for ${var.operations_alerts.sweep_missing_s} s"
    condition_absent {
      filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.state["tasks_in_flight"].name}\" AND resource.type=\"cloud_run_revision\""
      duration = "${var.operations_alerts.sweep_missing_s}s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_DELTA"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The sweep has logged no metrics line for ${var.operations_alerts.sweep_missing_s} s: Cloud Scheduler's sweep job is paused or failing, or the router cannot reach the database. Without the sweep, expired leases, lost messages and schedule ticks wait. Check the Cloud Scheduler job and the router's logs."
  }
}
