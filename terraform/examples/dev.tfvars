# A small development deployment. No secrets here: the database password is generated and kept in
# Secret Manager. Use: terraform apply -var-file=examples/dev.tfvars
project_id  = "my-dagrelay-dev"
region      = "europe-west1"
name_prefix = "dagrelay"

# Cheapest Cloud SQL tier (shared core, no SLA): 25 connections, 22 usable. The capacity model
# (README.md, "Capacity"): 4 routers x (2 + 1) + 4 dashboard instances x 2 + 2 for
# administration = 22; 4 x 100 = 400 tasks in flight. Terraform refuses more.
db_tier              = "db-f1-micro"
db_availability_type = "ZONAL"
router_max_instances = 4
router_concurrency   = 100
db_pool_size         = 2
db_max_overflow      = 1

# A throwaway project: let destroy remove everything.
deletion_protection   = false
force_destroy_buckets = true

status_invokers = ["group:dagrelay-dev@example.com"]

bigquery_datasets = ["finance", "reports", "web"]

# notification_channels = ["projects/my-dagrelay-dev/notificationChannels/1234567890"]
