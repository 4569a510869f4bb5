# Topics and the router's delivery.
#
# Delivery: explicit push subscriptions to the router function's URL, not a gen2 event_trigger.
# An event_trigger creates an Eventarc trigger whose Pub/Sub subscription is managed by Eventarc:
# Terraform cannot give it a dead-letter policy, and its retry policy is Eventarc's. A subscription
# of our own carries the dead-letter topic, the retry policy and the ack deadline the local stack
# uses (local_emulator/infra.py), so the deployed system behaves like the tested one. Pushes are
# authenticated with an OIDC token of a dedicated invoker service account (iam.tf); the router
# accepts the raw push envelope, exactly as in the local stack. The endpoint path carries
# /projects/<p>/topics/<t>: functions-framework derives the CloudEvent source from it, and the
# router recognises dead letters by that source.

locals {
  # Same values as local_emulator/infra.py EVENTS and DEAD_LETTERS (a unit test compares them).
  ack_deadline_s        = 600 # above the router's timeout, or a running message is redelivered
  retry_min_backoff     = "1s"
  retry_max_backoff     = "60s"
  max_delivery_attempts = 5 # Pub/Sub's minimum
  message_retention     = "604800s"

  # The router acknowledges every dead letter once it is recorded (or, its last resort, logged as
  # an ERROR), so one is redelivered only while the router is down or failing: slower retries,
  # and one day's retention instead of seven bounds how long.
  dead_letter_retry_min_backoff = "10s"
  dead_letter_retry_max_backoff = "600s"
  dead_letter_retention         = "86400s"

  router_uri = google_cloudfunctions2_function.router.service_config[0].uri
}

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; the messages carry ids and parameters, no data. Add kms_key_name for CMEK if policy requires it.
  name                       = local.events_topic
  message_retention_duration = local.message_retention

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "alerts" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; alert messages carry task ids and error text, no data.
  name                       = local.alerts_topic
  message_retention_duration = local.message_retention

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; dead letters are events-topic messages, which carry no data.
  name                       = local.dead_letter_topic
  message_retention_duration = local.message_retention

  depends_on = [google_project_service.apis]
}

# The events topic into the router, with retries and the dead-letter topic.
resource "google_pubsub_subscription" "router" {
  name  = "${local.events_topic}-router"
  topic = google_pubsub_topic.events.id

  ack_deadline_seconds       = local.ack_deadline_s
  message_retention_duration = local.message_retention

  push_config {
    push_endpoint = "${local.router_uri}/projects/${var.project_id}/topics/${google_pubsub_topic.events.name}"
    oidc_token {
      service_account_email = google_service_account.push_invoker.email
      audience              = local.router_uri
    }
  }

  retry_policy {
    minimum_backoff = local.retry_min_backoff
    maximum_backoff = local.retry_max_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = local.max_delivery_attempts
  }

  # A quiet pipeline must not lose its subscription: never expire.
  expiration_policy {
    ttl = ""
  }

  # Pushes fail until the invoker may call the router, and dead-lettering needs the Pub/Sub
  # service agent's grants.
  depends_on = [
    google_cloud_run_service_iam_member.router_push_invoker,
    google_pubsub_topic_iam_member.dead_letter_pubsub_agent,
  ]
}

# Dead letters into the router too: it records each one (dead_letters table), logs an ERROR and
# always acknowledges (when the record fails, the log line is the record). No dead-letter policy
# here — a dead letter of a dead letter would help nobody; its own bounded delivery instead.
resource "google_pubsub_subscription" "dead_letter_router" {
  name  = "${local.dead_letter_topic}-router"
  topic = google_pubsub_topic.dead_letter.id

  ack_deadline_seconds       = local.ack_deadline_s
  message_retention_duration = local.dead_letter_retention

  push_config {
    push_endpoint = "${local.router_uri}/projects/${var.project_id}/topics/${google_pubsub_topic.dead_letter.name}"
    oidc_token {
      service_account_email = google_service_account.push_invoker.email
      audience              = local.router_uri
    }
  }

  retry_policy {
    minimum_backoff = local.dead_letter_retry_min_backoff
    maximum_backoff = local.dead_letter_retry_max_backoff
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_service_iam_member.router_push_invoker]
}

# A topic without subscriptions drops what is published to it: this pull subscription keeps the
# alerts (7 days) for whatever consumes them (a chat bridge, an on-call tool, `gcloud pubsub
# subscriptions pull`).
resource "google_pubsub_subscription" "alerts" {
  name  = "${local.alerts_topic}-pull"
  topic = google_pubsub_topic.alerts.id

  ack_deadline_seconds       = 60
  message_retention_duration = local.message_retention

  expiration_policy {
    ttl = ""
  }
}
