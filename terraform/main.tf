# Names, the project's service agents and the APIs dagrelay needs. The other files hold one
# concern each: network, database, pubsub, functions, iam, scheduler, storage, bigquery,
# monitoring.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  prefix = var.name_prefix

  # Topic ids are passed to the functions as DAGRELAY_*_TOPIC: any names work.
  events_topic      = "${local.prefix}-events"
  alerts_topic      = "${local.prefix}-alerts"
  dead_letter_topic = "${local.prefix}-dead-letter"

  router_function  = "${local.prefix}-router"
  status_function  = "${local.prefix}-status"
  operate_function = "${local.prefix}-operate"

  # Bucket names are global: the project id keeps them unique.
  buckets = {
    inbox = "${var.project_id}-${local.prefix}-inbox"
  }
  source_bucket = "${var.project_id}-${local.prefix}-function-source"

  bigquery_location = coalesce(var.bigquery_location, var.region)

  # Google-managed service agents. Pub/Sub's exists once the API is enabled; it forwards
  # dead letters and signs the push subscriptions' OIDC tokens.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  apis = toset([
    "artifactregistry.googleapis.com", # the functions' container images
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com", # builds the function source
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtrace.googleapis.com", # the router's spans (var.enable_tracing)
    "compute.googleapis.com",    # VPC, subnet, reserved range
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com", # gen2 functions run on Cloud Run
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com", # private services access (Cloud SQL private IP)
    "sqladmin.googleapis.com",          # also used by the Cloud SQL Python Connector
    "storage.googleapis.com",
    "vpcaccess.googleapis.com", # Serverless VPC Access connector
  ])
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project = var.project_id
  service = each.value
  # Turning an API off on destroy can break other workloads in the same project.
  disable_on_destroy         = false
  disable_dependent_services = false
}
