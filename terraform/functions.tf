# The Cloud Functions (gen2): the event router (Pub/Sub push, pubsub.tf), the operator
# dashboard (operate, below) and the status function (HTTP); the deploy function is in
# deploy.tf. All are built from one archive: `dagrelay build-function` zips main.py, the
# dagrelay package, schema/ files, the migrations and a pinned requirements.txt.

locals {
  # The connectors' path to Cloud SQL: its public IP (only connectors admitted, database.tf)
  # or, with private_network, its private IP through the VPC connector (network.tf).
  db_ip_type    = var.private_network ? "private" : "public"
  vpc_connector = var.private_network ? google_vpc_access_connector.functions[0].id : null
  vpc_egress    = var.private_network ? "PRIVATE_RANGES_ONLY" : null

  # Settings of dagrelay.config.Settings, as DAGRELAY_<FIELD> (a unit test checks every name).
  function_env = {
    DAGRELAY_PROJECT_ID         = var.project_id
    DAGRELAY_REGION             = var.region
    DAGRELAY_EVENTS_TOPIC       = google_pubsub_topic.events.name
    DAGRELAY_ALERTS_TOPIC       = google_pubsub_topic.alerts.name
    DAGRELAY_DEAD_LETTER_TOPIC  = google_pubsub_topic.dead_letter.name
    DAGRELAY_CLOUD_SQL_INSTANCE = google_sql_database_instance.main.connection_name
    DAGRELAY_DB_NAME            = google_sql_database.dagrelay.name
    DAGRELAY_DB_USER            = google_sql_user.dagrelay.name
    DAGRELAY_DB_IP_TYPE         = local.db_ip_type
    DAGRELAY_DB_POOL_SIZE       = tostring(var.db_pool_size)
    DAGRELAY_DB_MAX_OVERFLOW    = tostring(var.db_max_overflow)
    DAGRELAY_HANDLER_MODULES    = join(",", var.handler_modules) # empty: the archive's dagrelay.yaml decides
    DAGRELAY_INBOX_BUCKET       = google_storage_bucket.data["inbox"].name
    DAGRELAY_BIGQUERY_LOCATION  = local.bigquery_location
    # Tracing (terraform/metrics.tf): Cloud Trace when enabled; off, no tracer is even imported.
    DAGRELAY_TRACING              = var.enable_tracing ? "gcp" : "off"
    DAGRELAY_TRACING_SAMPLE_RATIO = tostring(var.trace_sample_ratio)
    # The operator function's URLs (Cloud Run's and the functions' domain): the audiences its
    # callers' ID tokens are verified for (dashboard/identity.py); the other functions ignore it.
    DAGRELAY_ID_TOKEN_AUDIENCES = join(",", [
      "https://${local.operate_function}-${data.google_project.this.number}.${var.region}.run.app",
      "https://${var.region}-${var.project_id}.cloudfunctions.net/${local.operate_function}",
    ])
  }
}

# -- Capacity -------------------------------------------------------------------------------------
# The capacity model of functions/dagrelay/capacity.py (README.md, "Capacity"; a unit test checks
# these numbers against it): connections follow the engine's transactions, not the tasks in
# flight, so every router instance needs at most db_pool_size + db_max_overflow, whatever its
# request concurrency. The router's preconditions refuse a plan the database cannot take.

locals {
  # Cloud SQL for PostgreSQL's default max_connections: shared-core tiers by name, the others by
  # memory ([from MiB, connections], the last row the tier's memory reaches).
  tier_connections = { "db-f1-micro" = 25, "db-g1-small" = 50 }
  memory_connections = [
    [0, 25], [3840, 100], [6144, 200], [7680, 400], [15360, 500], [30720, 600], [61440, 800],
    [122880, 1000],
  ]
  db_tier_memory_mib = try(tonumber(regex("^db-custom-[0-9]+-([0-9]+)$", var.db_tier)[0]), -1)
  db_tier_connections = lookup(local.tier_connections, var.db_tier, (
    local.db_tier_memory_mib < 0 ? 0 : max([for row in local.memory_connections : row[1] if local.db_tier_memory_mib >= row[0]]...)
  ))
  db_max_connections      = var.db_max_connections != null ? var.db_max_connections : local.db_tier_connections
  db_reserved_connections = 3 # superuser_reserved_connections: Cloud SQL's users are not superusers
  db_admin_connections    = 2 # migrations, the CLI from the bastion, an operator's psql
  dashboard_connections   = 2 # per status/operate instance: pool 1 + overflow 1 (concurrency 1)
  db_other_connections    = (var.status_max_instances + var.operate_max_instances) * local.dashboard_connections + local.db_admin_connections
  router_connections      = var.router_max_instances * (var.db_pool_size + var.db_max_overflow)
  db_connections_needed   = local.router_connections + local.db_other_connections
  db_connections_usable   = local.db_max_connections - local.db_reserved_connections

  # What the router checks at start (dagrelay.capacity) and how many requests it serves at once.
  router_only_env = {
    DAGRELAY_REQUEST_CONCURRENCY  = tostring(var.router_concurrency)
    DAGRELAY_ROUTER_MAX_INSTANCES = tostring(var.router_max_instances)
    DAGRELAY_DB_MAX_CONNECTIONS   = tostring(local.db_max_connections)
    DAGRELAY_DB_OTHER_CONNECTIONS = tostring(local.db_other_connections)
    DAGRELAY_DB_POOL_TIMEOUT_S    = tostring(var.db_pool_timeout_s)
    THREADS                       = tostring(var.router_concurrency) # functions-framework's request threads
  }
  # The dashboard functions serve one request at a time: one connection, one spare.
  dashboard_only_env = {
    DAGRELAY_DB_POOL_SIZE    = "1"
    DAGRELAY_DB_MAX_OVERFLOW = "1"
  }
  router_env    = merge(local.function_env, local.router_only_env)
  dashboard_env = merge(local.function_env, local.dashboard_only_env)
}

# -- Source ---------------------------------------------------------------------------------------

resource "google_storage_bucket" "function_source" {
  #checkov:skip=CKV_GCP_62:Holds only build artifacts (function zips); access is recorded by Cloud Audit Logs, and usage-log buckets are the legacy mechanism.
  name     = local.source_bucket
  location = var.region

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # only rebuildable zips live here

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# The md5 in the name: a new build is a new object, which changes the functions' source and
# redeploys them; an unchanged build changes nothing.
resource "google_storage_bucket_object" "function_source" {
  name   = "function-source-${filemd5(var.function_source_archive)}.zip"
  bucket = google_storage_bucket.function_source.name
  source = var.function_source_archive
}

# -- Router ---------------------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "router" {
  name        = local.router_function
  location    = var.region
  description = "dagrelay event router: Pub/Sub push from the events and dead-letter topics."

  build_config {
    runtime         = "python311"
    entry_point     = "router"
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  # No event_trigger: the function is an HTTPS endpoint for the push subscriptions (pubsub.tf).
  # main.router is decorated with @functions_framework.cloud_event, which makes the framework
  # serve it as a CloudEvent function whatever the deployment's signature type, and convert the
  # raw push envelope into a Pub/Sub CloudEvent.
  service_config {
    service_account_email            = google_service_account.router.email
    timeout_seconds                  = var.router_timeout_s
    available_memory                 = var.router_memory
    available_cpu                    = var.router_cpu
    min_instance_count               = 0
    max_instance_count               = var.router_max_instances
    max_instance_request_concurrency = var.router_concurrency
    # Default ALLOW_INTERNAL_ONLY: Pub/Sub push counts as internal traffic for a service in the
    # same project, so nothing from the internet reaches the router; every request also needs
    # run.invoker, which only the push invoker holds.
    ingress_settings               = var.router_ingress
    all_traffic_on_latest_revision = true

    vpc_connector                 = local.vpc_connector
    vpc_connector_egress_settings = local.vpc_egress # Cloud SQL's private IP; Google APIs directly

    environment_variables = local.router_env

    secret_environment_variables {
      key        = "DAGRELAY_DB_PASSWORD"
      project_id = var.project_id
      secret     = google_secret_manager_secret.db_password.secret_id
      version    = "latest"
    }
  }

  lifecycle {
    precondition {
      condition     = local.db_max_connections > 0
      error_message = "db_tier ${var.db_tier} is not in the capacity model: set db_max_connections to its max_connections."
    }
    precondition {
      condition     = local.db_connections_needed <= local.db_connections_usable
      error_message = "The database cannot take this plan: ${var.router_max_instances} router instances x (db_pool_size ${var.db_pool_size} + db_max_overflow ${var.db_max_overflow}) = ${local.router_connections} connections, plus ${local.db_other_connections} for the dashboards and administration, need ${local.db_connections_needed}; ${var.db_tier} takes ${local.db_connections_usable} (max_connections ${local.db_max_connections} - ${local.db_reserved_connections} reserved). Lower router_max_instances, db_pool_size or db_max_overflow (raise router_concurrency for more tasks in flight instead), or take a larger tier."
    }
    precondition {
      condition     = var.router_concurrency == 1 || tonumber(var.router_cpu) >= 1
      error_message = "router_concurrency ${var.router_concurrency} needs router_cpu >= 1: Cloud Run serves one request at a time below 1 vCPU."
    }
    precondition {
      condition     = var.db_pool_size + var.db_max_overflow <= var.router_concurrency
      error_message = "db_pool_size + db_max_overflow (${var.db_pool_size + var.db_max_overflow}) exceeds router_concurrency (${var.router_concurrency}): connections a router can never use."
    }
  }

  depends_on = [
    google_project_service.apis,
    # The deploy checks that the runtime account can read the secret, and the build needs its grants.
    google_secret_manager_secret_iam_member.router_db_password,
    google_secret_manager_secret_version.db_password,
    google_project_iam_member.builder,
    google_storage_bucket_iam_member.builder_source,
    # The schema is migrated and the pipelines applied before new code handles messages.
    terraform_data.deploy,
  ]
}

# -- Status ---------------------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "status" {
  #checkov:skip=CKV_GCP_124:Ingress is a variable (status_ingress, default ALLOW_ALL) so that operators with run.invoker can call it from outside the VPC; every request still needs an IAM identity token, and no binding makes it public. Set status_ingress = "ALLOW_INTERNAL_ONLY" to restrict it to the VPC.
  name        = local.status_function
  location    = var.region
  description = "dagrelay batch status (JSON over HTTPS, IAM-authenticated)."

  build_config {
    runtime         = "python311"
    entry_point     = "status"
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.status.email
    timeout_seconds                  = 60
    available_memory                 = "256Mi"
    min_instance_count               = 0
    max_instance_count               = var.status_max_instances
    max_instance_request_concurrency = 1
    # Never public: there is no allUsers binding, so every request needs run.invoker (iam.tf).
    ingress_settings               = var.status_ingress
    all_traffic_on_latest_revision = true

    vpc_connector                 = local.vpc_connector
    vpc_connector_egress_settings = local.vpc_egress

    environment_variables = local.dashboard_env

    secret_environment_variables {
      key        = "DAGRELAY_DB_PASSWORD"
      project_id = var.project_id
      secret     = google_secret_manager_secret.db_password.secret_id
      version    = "latest"
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.status_db_password,
    google_secret_manager_secret_version.db_password,
    google_project_iam_member.builder,
    google_storage_bucket_iam_member.builder_source,
    terraform_data.deploy,
  ]
}

# -- Operate --------------------------------------------------------------------------------------
# The same dashboard with the operator's actions (POSTs that publish start_batch, rerun and
# cancel_batch, as the CLI does). A separate function so viewers (status_invokers) and operators
# (operate_invokers) are separate IAM lists, and only this function's account may publish.

resource "google_cloudfunctions2_function" "operate" {
  #checkov:skip=CKV_GCP_124:Ingress is a variable (status_ingress, shared with the status function) so that operators with run.invoker can call it from outside the VPC; every request still needs an IAM identity token of an operate_invokers member, and no binding makes it public.
  name        = local.operate_function
  location    = var.region
  description = "dagrelay operator dashboard: the status dashboard plus trigger, rerun and cancel (IAM-authenticated, operators only)."

  build_config {
    runtime         = "python311"
    entry_point     = "operate"
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.operate.email
    timeout_seconds                  = 60
    available_memory                 = "256Mi"
    min_instance_count               = 0
    max_instance_count               = var.operate_max_instances
    max_instance_request_concurrency = 1
    # Never public: there is no allUsers binding, so every request needs run.invoker (iam.tf).
    ingress_settings               = var.status_ingress
    all_traffic_on_latest_revision = true

    vpc_connector                 = local.vpc_connector
    vpc_connector_egress_settings = local.vpc_egress

    environment_variables = local.dashboard_env

    secret_environment_variables {
      key        = "DAGRELAY_DB_PASSWORD"
      project_id = var.project_id
      secret     = google_secret_manager_secret.db_password.secret_id
      version    = "latest"
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.operate_db_password,
    google_secret_manager_secret_version.db_password,
    google_project_iam_member.builder,
    google_storage_bucket_iam_member.builder_source,
    terraform_data.deploy,
  ]
}
