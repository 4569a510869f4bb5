# Service accounts and every IAM grant, in one place so least privilege can be reviewed at a
# glance (tests/unit/test_terraform.py compares them to a table). Nothing is granted to allUsers
# or allAuthenticatedUsers.
#
#   router        runs the event router: publishes to its topics, Cloud SQL, BigQuery jobs and its
#                 datasets, its buckets, the database password
#   status        runs the status function (viewers' dashboard): Cloud SQL and the database password
#   operate       runs the operator dashboard: the same, and publishes to the events topic (the
#                 only account besides the router's that may)
#   deploy        runs the deploy step (migrations, pipelines): Cloud SQL and the database password
#   push-invoker  identity of the push subscriptions' OIDC tokens: may invoke the router only
#   builder       Cloud Build identity for the function builds: logs, images, the source bucket
#
# Cloud Scheduler publishes with its own service agent (roles/cloudscheduler.serviceAgent, granted
# by Google when the API is enabled), so no scheduler account is needed for Pub/Sub targets.

resource "google_service_account" "router" {
  account_id   = "${local.prefix}-router"
  display_name = "dagrelay event router (runtime)"
}

resource "google_service_account" "status" {
  account_id   = "${local.prefix}-status"
  display_name = "dagrelay status function (runtime)"
}

resource "google_service_account" "operate" {
  account_id   = "${local.prefix}-operate"
  display_name = "dagrelay operator dashboard (runtime)"
}

resource "google_service_account" "deploy" {
  account_id   = "${local.prefix}-deploy"
  display_name = "dagrelay deploy step (runtime)"
}

resource "google_service_account" "push_invoker" {
  account_id   = "${local.prefix}-push"
  display_name = "dagrelay Pub/Sub push invoker (OIDC)"
}

resource "google_service_account" "builder" {
  account_id   = "${local.prefix}-build"
  display_name = "dagrelay function builds (Cloud Build)"
}

# -- Router ---------------------------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "router_publisher" {
  for_each = {
    events = google_pubsub_topic.events.name # run_task, retries, the outbox relay
    alerts = google_pubsub_topic.alerts.name # terminal failures
  }

  topic  = each.value
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.router.email}"
}

resource "google_project_iam_member" "router" {
  for_each = toset([
    "roles/cloudsql.client",  # the Cloud SQL Python Connector (instances.get, connect)
    "roles/bigquery.jobUser", # run query/load jobs; data access is per dataset below
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.router.email}"
}

resource "google_project_iam_member" "router_trace_agent" {
  count = var.enable_tracing ? 1 : 0 # write spans to Cloud Trace, nothing else

  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.router.email}"
}

resource "google_bigquery_dataset_iam_member" "router_data_editor" {
  for_each = google_bigquery_dataset.datasets

  dataset_id = each.value.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.router.email}"
}

resource "google_storage_bucket_iam_member" "router_object_admin" {
  for_each = google_storage_bucket.data

  bucket = each.value.name
  role   = "roles/storage.objectAdmin" # read inbox/, write staging/, move files to archive/ or rejected/
  member = "serviceAccount:${google_service_account.router.email}"
}

resource "google_secret_manager_secret_iam_member" "router_db_password" {
  secret_id = google_secret_manager_secret.db_password.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.router.email}"
}

# -- Status ---------------------------------------------------------------------------------------

resource "google_project_iam_member" "status_cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.status.email}"
}

resource "google_secret_manager_secret_iam_member" "status_db_password" {
  secret_id = google_secret_manager_secret.db_password.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.status.email}"
}

# -- Operate --------------------------------------------------------------------------------------

resource "google_project_iam_member" "operate_cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.operate.email}"
}

resource "google_secret_manager_secret_iam_member" "operate_db_password" {
  secret_id = google_secret_manager_secret.db_password.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.operate.email}"
}

resource "google_pubsub_topic_iam_member" "operate_publisher" {
  topic  = google_pubsub_topic.events.name
  role   = "roles/pubsub.publisher" # start_batch, rerun, cancel_batch from the operator's forms
  member = "serviceAccount:${google_service_account.operate.email}"
}

# -- Deploy ---------------------------------------------------------------------------------------
# The deploy function is invoked by whoever runs `terraform apply` (Owner or Cloud Run Admin
# holds run.invoker): no invoker binding.

resource "google_project_iam_member" "deploy_cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.deploy.email}"
}

resource "google_secret_manager_secret_iam_member" "deploy_db_password" {
  secret_id = google_secret_manager_secret.db_password.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.deploy.email}"
}

# -- Invocation -----------------------------------------------------------------------------------
# A gen2 function is a Cloud Run service of the same name: invoking it needs run.invoker there.

resource "google_cloud_run_service_iam_member" "router_push_invoker" {
  location = google_cloudfunctions2_function.router.location
  service  = google_cloudfunctions2_function.router.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push_invoker.email}"
}

resource "google_cloud_run_service_iam_member" "status_invokers" {
  for_each = toset(var.status_invokers)

  location = google_cloudfunctions2_function.status.location
  service  = google_cloudfunctions2_function.status.name
  role     = "roles/run.invoker"
  member   = each.value
}

resource "google_cloud_run_service_iam_member" "operate_invokers" {
  for_each = toset(var.operate_invokers)

  location = google_cloudfunctions2_function.operate.location
  service  = google_cloudfunctions2_function.operate.name
  role     = "roles/run.invoker"
  member   = each.value
}

# -- Builds ---------------------------------------------------------------------------------------
# A dedicated build account: since 2024 new projects' default build account may lack these
# permissions (or be disabled by organisation policy).

resource "google_project_iam_member" "builder" {
  for_each = toset([
    "roles/logging.logWriter",       # build logs
    "roles/artifactregistry.writer", # the function images (gcf-artifacts repository)
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_storage_bucket_iam_member" "builder_source" {
  bucket = google_storage_bucket.function_source.name
  role   = "roles/storage.objectViewer" # read the source zip
  member = "serviceAccount:${google_service_account.builder.email}"
}

# -- Google service agents ------------------------------------------------------------------------

# Dead-lettering: Pub/Sub's service agent republishes to the dead-letter topic and acknowledges on
# the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_pubsub_agent" {
  topic  = google_pubsub_topic.dead_letter.name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "router_pubsub_agent" {
  subscription = google_pubsub_subscription.router.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Pub/Sub's service agent mints the push OIDC tokens as push-invoker. Projects created after
# April 2021 grant this implicitly; older ones need it (harmless otherwise).
resource "google_service_account_iam_member" "push_invoker_token_creator" {
  service_account_id = google_service_account.push_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# GCS notifications are published by the project's Cloud Storage service agent.
resource "google_pubsub_topic_iam_member" "events_gcs_agent" {
  topic  = google_pubsub_topic.events.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# -- Cloud Run jobs (the cloudrun.job handler) ----------------------------------------------------
# The router starts, watches and cancels the team's own Cloud Run jobs (var.cloud_run_jobs, in
# var.region) and nothing else: a custom role with exactly those permissions, granted on each
# job. A job runs as its own service account; running it with overrides needs no actAs.

resource "google_project_iam_custom_role" "run_jobs" {
  count = length(var.cloud_run_jobs) > 0 ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(local.prefix, "-", "_")}_run_jobs"
  title       = "dagrelay router: run and cancel Cloud Run jobs"
  description = "Start an execution of a job with overrides, read it and its tasks, cancel it."
  permissions = [
    "run.jobs.get",
    "run.jobs.run",
    "run.jobs.runWithOverrides",
    "run.executions.get",
    "run.executions.cancel",
    "run.tasks.get",
    "run.tasks.list",
  ]
}

resource "google_cloud_run_v2_job_iam_member" "router_runs_jobs" {
  for_each = toset(var.cloud_run_jobs)

  project  = var.project_id
  location = var.region
  name     = each.value
  role     = google_project_iam_custom_role.run_jobs[0].id
  member   = "serviceAccount:${google_service_account.router.email}"
}
