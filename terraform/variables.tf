# Inputs. Only project_id and region are required; everything else has a working default.
# No variable holds a secret: the database password is generated (database.tf).

# -- Where ----------------------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project id to deploy into (it must exist and have billing enabled)."
  type        = string

  validation {
    # Project ids: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter.
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "region" {
  description = "Region of Cloud SQL, the functions, the VPC connector, Cloud Scheduler and the buckets, e.g. europe-west1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1 or us-central1 (not a zone)."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (topics, functions, service accounts, buckets get the project id too). Short: service account ids are at most 30 characters."
  type        = string
  default     = "dagrelay"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-20 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "labels" {
  description = "Labels put on every resource that takes labels."
  type        = map(string)
  default     = { app = "dagrelay" }

  validation {
    condition = alltrue([
      for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "labels: keys start with a lowercase letter; keys and values use lowercase letters, digits, _ and -, at most 63 characters."
  }
}

# -- Function source ------------------------------------------------------------------------------

variable "function_source_archive" {
  description = "Path (relative to the directory terraform runs in) of the zip built by `dagrelay build-function --out dist/function-source.zip`. Its md5 is part of the uploaded object's name, so a new build redeploys both functions."
  type        = string
  default     = "../dist/function-source.zip"

  validation {
    condition     = endswith(var.function_source_archive, ".zip")
    error_message = "function_source_archive must be the .zip made by `dagrelay build-function`."
  }
  validation {
    condition     = fileexists(var.function_source_archive)
    error_message = "function_source_archive does not exist: run `.venv/bin/dagrelay build-function --out dist/function-source.zip` in the repository root first."
  }
}

variable "handler_modules" {
  description = "Python modules the functions import at start to register user handlers (DAGRELAY_HANDLER_MODULES). They must be inside the source archive."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.handler_modules : can(regex("^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$", m))])
    error_message = "handler_modules must be dotted Python module names."
  }
}

variable "deploy_timeout_s" {
  description = "Request timeout of the deploy function (migrations to head and every pipeline of the archive, once per archive; deploy.tf)."
  type        = number
  default     = 1800

  validation {
    condition     = var.deploy_timeout_s >= 60 && var.deploy_timeout_s <= 3600
    error_message = "deploy_timeout_s must be between 60 and 3600 (an HTTP function's limit)."
  }
}

# -- Functions ------------------------------------------------------------------------------------

variable "router_max_instances" {
  description = "Most router instances at once. Each keeps up to db_pool_size + db_max_overflow database connections, whatever its request concurrency; the capacity model (README.md, \"Capacity\") checks the total against the tier's connection limit at plan time."
  type        = number
  default     = 4

  validation {
    condition     = var.router_max_instances >= 1 && var.router_max_instances <= 100
    error_message = "router_max_instances must be between 1 and 100."
  }
}

variable "router_concurrency" {
  description = "Requests (tasks) a router instance serves at once: max_instance_request_concurrency and functions-framework's THREADS. A running handler holds no database connection, so this does not cost connections; above 1 it needs router_cpu >= 1."
  type        = number
  default     = 100

  validation {
    condition     = var.router_concurrency >= 1 && var.router_concurrency <= 1000
    error_message = "router_concurrency must be between 1 and 1000 (Cloud Run's limit)."
  }
}

variable "router_cpu" {
  description = "vCPUs of a router instance (available_cpu). Cloud Run serves more than one request at a time only with at least 1 vCPU."
  type        = string
  default     = "1"

  validation {
    condition     = can(tonumber(var.router_cpu)) && tonumber(var.router_cpu) > 0 && tonumber(var.router_cpu) <= 8
    error_message = "router_cpu must be a number of vCPUs between 0.083 and 8, e.g. \"1\"."
  }
}

variable "router_memory" {
  description = "Memory of a router instance (Cloud Run quantity, e.g. 512Mi, 1Gi)."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.router_memory))
    error_message = "router_memory must look like 512Mi or 1Gi."
  }
}

variable "router_timeout_s" {
  description = "Router request timeout in seconds. Stays below the subscription's ack deadline (600 s), or Pub/Sub redelivers a message that is still running."
  type        = number
  default     = 540

  validation {
    condition     = var.router_timeout_s >= 60 && var.router_timeout_s < 600
    error_message = "router_timeout_s must be between 60 and 599 (the ack deadline is 600 s)."
  }
}

variable "router_ingress" {
  description = "Network ingress of the router. ALLOW_INTERNAL_ONLY: only same-project sources such as Pub/Sub push reach it (Cloud Run counts Pub/Sub as internal). ALLOW_ALL still requires IAM (run.invoker, held by the push invoker only)."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.router_ingress)
    error_message = "router_ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "status_max_instances" {
  description = "Most status-function instances at once."
  type        = number
  default     = 2

  validation {
    condition     = var.status_max_instances >= 1 && var.status_max_instances <= 20
    error_message = "status_max_instances must be between 1 and 20."
  }
}

variable "status_ingress" {
  description = "Network ingress of the status function. It always requires IAM (roles/run.invoker); ALLOW_ALL lets an operator with that role call it from anywhere."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.status_ingress)
    error_message = "status_ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "status_invokers" {
  description = "Principals allowed to call the status function, e.g. [\"group:oncall@example.com\"]. Never public."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for m in var.status_invokers : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))
    ])
    error_message = "status_invokers must be IAM principals (user:, group:, serviceAccount:, domain:); allUsers and allAuthenticatedUsers are refused."
  }
}

variable "operate_invokers" {
  description = "Principals allowed to call the operator dashboard (trigger, rerun, cancel), e.g. [\"group:dagrelay-operators@example.com\"]. Keep it shorter than status_invokers; never public."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for m in var.operate_invokers : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))
    ])
    error_message = "operate_invokers must be IAM principals (user:, group:, serviceAccount:, domain:); allUsers and allAuthenticatedUsers are refused."
  }
}

variable "operate_max_instances" {
  description = "Most operator-dashboard instances at once."
  type        = number
  default     = 2

  validation {
    condition     = var.operate_max_instances >= 1 && var.operate_max_instances <= 10
    error_message = "operate_max_instances must be between 1 and 10."
  }
}

variable "db_pool_size" {
  description = "Database connections each router instance keeps (DAGRELAY_DB_POOL_SIZE). A connection is held only for one of the engine's short transactions, so a few serve router_concurrency requests; the dashboard functions keep 1 + 1."
  type        = number
  default     = 2

  validation {
    condition     = var.db_pool_size >= 1 && var.db_pool_size <= 50
    error_message = "db_pool_size must be between 1 and 50 (dagrelay's own limit)."
  }
}

variable "db_max_overflow" {
  description = "Extra connections a router instance may open under load (DAGRELAY_DB_MAX_OVERFLOW)."
  type        = number
  default     = 1

  validation {
    condition     = var.db_max_overflow >= 0 && var.db_max_overflow <= 50
    error_message = "db_max_overflow must be between 0 and 50."
  }
}

variable "db_pool_timeout_s" {
  description = "How long a request waits for a pooled connection before it fails and Pub/Sub redelivers its message (DAGRELAY_DB_POOL_TIMEOUT_S)."
  type        = number
  default     = 30

  validation {
    condition     = var.db_pool_timeout_s > 0 && var.db_pool_timeout_s <= 300
    error_message = "db_pool_timeout_s must be between 0 and 300 seconds."
  }
}

variable "db_max_connections" {
  description = "The database's max_connections, for the capacity model: null takes the tier's default (db-f1-micro 25, db-g1-small 50, db-custom-* by memory). Set it when you set the max_connections flag or use a tier the model does not know."
  type        = number
  default     = null

  validation {
    condition     = var.db_max_connections == null || coalesce(var.db_max_connections, 0) >= 10
    error_message = "db_max_connections must be null or at least 10."
  }
}

# -- Network --------------------------------------------------------------------------------------

variable "private_network" {
  description = "The production network path: Cloud SQL on a private IP only, reached through a VPC and a Serverless VPC Access connector (two always-on VMs, about US$ 13 a month more). false (default): a public IP with no authorized networks that admits only the Cloud SQL connectors (IAM, TLS), and no VPC at all (README.md, \"Network path\")."
  type        = bool
  default     = false
}

variable "connector_cidr" {
  description = "Unused /28 range for the Serverless VPC Access connector's subnet (the functions' path to Cloud SQL's private IP; private_network only)."
  type        = string
  default     = "10.8.0.0/28"

  validation {
    condition     = can(cidrhost(var.connector_cidr, 0)) && endswith(var.connector_cidr, "/28")
    error_message = "connector_cidr must be an IPv4 /28 range, e.g. 10.8.0.0/28."
  }
}

variable "private_services_prefix_length" {
  description = "Size of the range reserved for private services access (Cloud SQL's private IPs)."
  type        = number
  default     = 20

  validation {
    condition     = var.private_services_prefix_length >= 16 && var.private_services_prefix_length <= 24
    error_message = "private_services_prefix_length must be between 16 and 24."
  }
}

variable "connector_machine_type" {
  description = "Machine type of the VPC connector's instances (e2-micro is the cheapest)."
  type        = string
  default     = "e2-micro"

  validation {
    condition     = contains(["e2-micro", "f1-micro", "e2-standard-4"], var.connector_machine_type)
    error_message = "connector_machine_type must be e2-micro, f1-micro or e2-standard-4."
  }
}

# -- Cloud SQL ------------------------------------------------------------------------------------

variable "db_tier" {
  description = "Cloud SQL machine tier. db-f1-micro / db-g1-small are shared-core (no SLA, cheapest); db-custom-1-3840 and up for production."
  type        = string
  default     = "db-f1-micro" # the small profile (README.md, "Cost at idle")

  validation {
    condition     = can(regex("^db-(f1-micro|g1-small|custom-[0-9]+-[0-9]+|perf-optimized-N-[0-9]+)$", var.db_tier))
    error_message = "db_tier must be db-f1-micro, db-g1-small or db-custom-CPUS-MEMORY_MB."
  }
}

variable "db_availability_type" {
  description = "ZONAL (one zone) or REGIONAL (high availability, about twice the price)."
  type        = string
  default     = "ZONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.db_availability_type)
    error_message = "db_availability_type must be ZONAL or REGIONAL."
  }
}

variable "db_disk_size_gb" {
  description = "Initial SSD size in GB (it grows automatically)."
  type        = number
  default     = 10

  validation {
    condition     = var.db_disk_size_gb >= 10
    error_message = "db_disk_size_gb must be at least 10."
  }
}

variable "db_name" {
  description = "Name of the metadata database (DAGRELAY_DB_NAME)."
  type        = string
  default     = "dagrelay"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must be a lowercase PostgreSQL identifier (letters, digits, _), at most 63 characters."
  }
}

variable "db_user" {
  description = "Database user the functions and the migrations connect as (DAGRELAY_DB_USER)."
  type        = string
  default     = "dagrelay"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_user))
    error_message = "db_user must be a lowercase PostgreSQL identifier (letters, digits, _), at most 63 characters."
  }
}

variable "db_backup_start_time" {
  description = "Start of the daily backup window, HH:MM in UTC."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.db_backup_start_time))
    error_message = "db_backup_start_time must be HH:MM (24 h, UTC)."
  }
}

variable "db_retained_backups" {
  description = "Automated backups kept."
  type        = number
  default     = 7

  validation {
    condition     = var.db_retained_backups >= 1 && var.db_retained_backups <= 365
    error_message = "db_retained_backups must be between 1 and 365."
  }
}

variable "db_transaction_log_retention_days" {
  description = "Days of write-ahead log kept for point-in-time recovery (1-7 on the Enterprise edition)."
  type        = number
  default     = 7

  validation {
    condition     = var.db_transaction_log_retention_days >= 1 && var.db_transaction_log_retention_days <= 7
    error_message = "db_transaction_log_retention_days must be between 1 and 7."
  }
}

variable "deletion_protection" {
  description = "Protects the Cloud SQL instance from deletion (both Terraform's guard and the Cloud SQL API's). Set false and apply before `terraform destroy`."
  type        = bool
  default     = true
}

# -- Storage and BigQuery ---------------------------------------------------------------------------

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete buckets that still hold objects. Keep false outside throwaway projects."
  type        = bool
  default     = false
}

variable "inbox_retention_days" {
  description = "Days an object stays in the inbox bucket before it is deleted (ingestion moves it to archive or rejected long before)."
  type        = number
  default     = 30

  validation {
    condition     = var.inbox_retention_days >= 1
    error_message = "inbox_retention_days must be at least 1."
  }
}

variable "archive_coldline_after_days" {
  description = "Days after which archived objects move to the COLDLINE storage class."
  type        = number
  default     = 90

  validation {
    condition     = var.archive_coldline_after_days >= 30
    error_message = "archive_coldline_after_days must be at least 30 (NEARLINE/COLDLINE minimum storage durations)."
  }
}

variable "rejected_retention_days" {
  description = "Days a rejected file is kept for inspection before it is deleted."
  type        = number
  default     = 90

  validation {
    condition     = var.rejected_retention_days >= 1
    error_message = "rejected_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted object version is kept (versioning is on for every bucket)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "bigquery_datasets" {
  description = "BigQuery datasets the pipelines write to; the router may edit data in these only."
  type        = list(string)
  default     = ["finance", "reports", "web"] # schema/sources.yaml's targets, monthly_profit's report

  validation {
    # A dataset id is at most 1024 letters, digits and _. The length is checked apart: Terraform's
    # regex engine (RE2) refuses a repeat count over 1000, and can() would turn that into false.
    condition     = length(var.bigquery_datasets) == length(distinct(var.bigquery_datasets)) && alltrue([for d in var.bigquery_datasets : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", d)) && length(d) <= 1024])
    error_message = "bigquery_datasets must be distinct dataset ids (letters, digits, _)."
  }
}

variable "bigquery_location" {
  description = "Location of the BigQuery datasets (EU, US or a region). Defaults to var.region."
  type        = string
  default     = null

  validation {
    condition     = var.bigquery_location == null || can(regex("^(EU|US|[a-z]+-[a-z]+[0-9]+)$", coalesce(var.bigquery_location, "EU")))
    error_message = "bigquery_location must be EU, US or a region such as europe-west1."
  }
}

# -- Scheduling -----------------------------------------------------------------------------------

variable "sweep_schedule" {
  description = "Cron schedule of the sweep (expired leases, outbox relay, lost messages, due schedule ticks). Every minute by design: a schedule tick starts at most this late."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.sweep_schedule))) == 5
    error_message = "sweep_schedule must be a five-field cron expression."
  }
}

variable "cloud_run_jobs" {
  description = "Cloud Run jobs (names, in var.region) the cloudrun.job handler may run, watch and cancel: the router gets a custom role with exactly those permissions on each. Empty: no job may be run."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for j in var.cloud_run_jobs : can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", j))])
    error_message = "cloud_run_jobs must be Cloud Run job names: lowercase letters, digits and hyphens, starting with a letter, at most 63 characters."
  }
}

# -- Monitoring -----------------------------------------------------------------------------------

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/P/notificationChannels/N) the alert policies notify. Empty: incidents show in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "notification_channels must be ids like projects/my-project/notificationChannels/1234567890."
  }
}

# -- Tracing and operations metrics (terraform/metrics.tf) ----------------------------------------

variable "enable_tracing" {
  description = "Send the router's spans (one trace per batch, one span per attempt) to Cloud Trace: sets DAGRELAY_TRACING=gcp (otherwise off) and grants the router roles/cloudtrace.agent."
  type        = bool
  default     = false
}

variable "trace_sample_ratio" {
  description = "Share of batches traced when enable_tracing is true (DAGRELAY_TRACING_SAMPLE_RATIO); a batch's attempts follow its batch."
  type        = number
  default     = 1

  validation {
    condition     = var.trace_sample_ratio >= 0 && var.trace_sample_ratio <= 1
    error_message = "trace_sample_ratio must be between 0 and 1."
  }
}

variable "operations_alerts" {
  description = "Thresholds (seconds) of the operations alerts: a due message left unpublished, a task queued for a pool slot, a batch still running, and how long without the sweep's metrics line before the sweep itself is reported missing."
  type = object({
    oldest_unpublished_s   = optional(number, 600)
    oldest_queued_s        = optional(number, 3600)
    oldest_running_batch_s = optional(number, 21600)
    sweep_missing_s        = optional(number, 900)
  })
  default = {}

  validation {
    condition     = alltrue([for v in values(var.operations_alerts) : v > 0])
    error_message = "operations_alerts thresholds must be positive numbers of seconds."
  }
}
