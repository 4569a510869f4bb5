# Log-based alerts. The router logs JSON lines on stdout; Cloud Logging parses them into
# jsonPayload with the line's severity (dagrelay/logs.py).
#   - a task that exhausted its retries: severity ERROR, jsonPayload.alert = "task_failed"
#     (one line per terminal failure; its message also goes to the alerts topic);
#   - a dead letter recorded by the router: severity ERROR, message "dead letter: ...".

locals {
  router_logs = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${local.router_function}\"",
    "severity>=ERROR",
  ])
}

resource "google_logging_metric" "task_failures" {
  name        = "${local.prefix}-task-failures"
  description = "dagrelay tasks that failed terminally (retries exhausted or non-retryable)."
  filter      = "${local.router_logs} AND jsonPayload.alert=\"task_failed\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "dagrelay task failures"

    labels {
      key         = "pipeline"
      value_type  = "STRING"
      description = "Pipeline of the failed task."
    }
  }

  label_extractors = {
    pipeline = "EXTRACT(jsonPayload.pipeline)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "dead_letters" {
  name        = "${local.prefix}-dead-letters"
  description = "Messages Pub/Sub gave up on after max delivery attempts, recorded by the router."
  filter      = "${local.router_logs} AND jsonPayload.message=~\"^dead letter: \""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "dagrelay dead letters"
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "task_failures" {
  display_name          = "dagrelay: task failed"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "A dagrelay task failed terminally"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.task_failures.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.pipeline"]
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
    content   = <<-EOT
      A dagrelay task exhausted its retries (or failed with a non-retryable error); its
      descendants are UPSTREAM_FAILED and the batch fails when nothing more can run.

      - Logs: `resource.labels.service_name="${local.router_function}" AND jsonPayload.alert="task_failed"`
        (fields: pipeline, batch_id, task, attempt, error).
      - Batch state: `dagrelay status BATCH_ID`, or the status function.
      - After fixing the cause: publish a `rerun` message for the task (with `downstream: true`).
    EOT
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "dagrelay: message dead-lettered"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Pub/Sub dead-lettered a dagrelay message"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.dead_letters.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
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
    content   = <<-EOT
      The router failed a message ${local.max_delivery_attempts} times (an infrastructure error such as
      an unreachable database), and Pub/Sub moved it to the dead-letter topic. The router recorded
      it in the dead_letters table; `dagrelay status BATCH_ID` lists a batch's dead letters.
      Look at the router's ERROR logs just before this alert for the cause.
    EOT
  }
}
