# dagrelay from this checkout. The inputs below are the ones examples/*.tfvars set; every other
# input of the module keeps its default (terraform/variables.tf).
module "dagrelay" {
  source = "../"

  project_id              = var.project_id
  region                  = var.region
  name_prefix             = var.name_prefix
  labels                  = var.labels
  function_source_archive = var.function_source_archive
  handler_modules         = var.handler_modules
  private_network         = var.private_network

  router_max_instances = var.router_max_instances
  router_concurrency   = var.router_concurrency
  router_cpu           = var.router_cpu
  status_ingress       = var.status_ingress
  status_invokers      = var.status_invokers
  db_tier              = var.db_tier
  db_availability_type = var.db_availability_type
  db_pool_size         = var.db_pool_size
  db_max_overflow      = var.db_max_overflow
  db_pool_timeout_s    = var.db_pool_timeout_s
  db_max_connections   = var.db_max_connections

  db_retained_backups               = var.db_retained_backups
  db_transaction_log_retention_days = var.db_transaction_log_retention_days
  deletion_protection               = var.deletion_protection
  force_destroy_buckets             = var.force_destroy_buckets
  bigquery_datasets                 = var.bigquery_datasets
  notification_channels             = var.notification_channels
  cloud_run_jobs                    = var.cloud_run_jobs
}
