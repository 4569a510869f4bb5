# The root's inputs: each passed to the module unchanged (its variables.tf validates them).

variable "project_id" {
  description = "Google Cloud project id to deploy into (it must exist and have billing enabled)."
  type        = string
}

variable "region" {
  description = "Region of Cloud SQL, the functions, the VPC connector, Cloud Scheduler and the buckets, e.g. europe-west1."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name (topics, functions, service accounts, buckets get the project id too). Short: service account ids are at most 30 characters."
  type        = string
  default     = "dagrelay"
}

variable "labels" {
  description = "Labels put on every resource that takes labels."
  type        = map(string)
  default     = { app = "dagrelay" }
}

variable "function_source_archive" {
  description = "Path (relative to the directory terraform runs in) of the zip built by `dagrelay build-function --out dist/function-source.zip`. Its md5 is part of the uploaded object's name, so a new build redeploys both functions."
  type        = string
  default     = "../../dist/function-source.zip"
}

variable "handler_modules" {
  description = "Python modules the functions import at start to register user handlers (DAGRELAY_HANDLER_MODULES). They must be inside the source archive."
  type        = list(string)
  default     = []
}

variable "private_network" {
  description = "The production network path: Cloud SQL on a private IP only, through a VPC connector (about US$ 13 a month more). false: a public IP that admits only the Cloud SQL connectors."
  type        = bool
  default     = false
}

variable "router_max_instances" {
  description = "Most router instances at once. Each keeps up to db_pool_size + db_max_overflow database connections, whatever its request concurrency; the module checks the total against the tier's connection limit."
  type        = number
  default     = 4
}

variable "router_concurrency" {
  description = "Requests (tasks) a router instance serves at once; a running handler holds no database connection. Above 1 it needs router_cpu >= 1."
  type        = number
  default     = 100
}

variable "router_cpu" {
  description = "vCPUs of a router instance (at least 1 for a request concurrency above 1)."
  type        = string
  default     = "1"
}

variable "status_ingress" {
  description = "Network ingress of the status function. It always requires IAM (roles/run.invoker); ALLOW_ALL lets an operator with that role call it from anywhere."
  type        = string
  default     = "ALLOW_ALL"
}

variable "status_invokers" {
  description = "Principals allowed to call the status function, e.g. [\"group:oncall@example.com\"]. Never public."
  type        = list(string)
  default     = []
}

variable "db_tier" {
  description = "Cloud SQL machine tier. db-f1-micro / db-g1-small are shared-core (no SLA, cheapest); db-custom-1-3840 and up for production."
  type        = string
  default     = "db-f1-micro"
}

variable "db_availability_type" {
  description = "ZONAL (one zone) or REGIONAL (high availability, about twice the price)."
  type        = string
  default     = "ZONAL"
}

variable "db_pool_size" {
  description = "Database connections each router instance keeps (DAGRELAY_DB_POOL_SIZE); the dashboard functions keep 1 + 1."
  type        = number
  default     = 2
}

variable "db_max_overflow" {
  description = "Extra connections a router instance may open under load (DAGRELAY_DB_MAX_OVERFLOW)."
  type        = number
  default     = 1
}

variable "db_pool_timeout_s" {
  description = "How long a request waits for a pooled connection before it fails and Pub/Sub redelivers its message."
  type        = number
  default     = 30
}

variable "db_max_connections" {
  description = "The database's max_connections for the capacity model; null: the tier's default."
  type        = number
  default     = null
}

variable "db_retained_backups" {
  description = "Automated backups kept."
  type        = number
  default     = 7
}

variable "db_transaction_log_retention_days" {
  description = "Days of write-ahead log kept for point-in-time recovery (1-7 on the Enterprise edition)."
  type        = number
  default     = 7
}

variable "deletion_protection" {
  description = "Protects the Cloud SQL instance from deletion (both Terraform's guard and the Cloud SQL API's). Set false and apply before `terraform destroy`."
  type        = bool
  default     = true
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete buckets that still hold objects. Keep false outside throwaway projects."
  type        = bool
  default     = false
}

variable "bigquery_datasets" {
  description = "BigQuery datasets the pipelines write to; the router may edit data in these only."
  type        = list(string)
  default     = ["finance", "reports", "web"] # schema/sources.yaml's targets, monthly_profit's report
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/P/notificationChannels/N) the alert policies notify. Empty: incidents show in the console only."
  type        = list(string)
  default     = []
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
