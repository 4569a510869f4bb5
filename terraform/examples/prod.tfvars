# A production-shaped deployment: Cloud SQL on a private IP only (VPC connector), dedicated-core
# and highly available, protected from deletion, alerts to on-call. No secrets here.
project_id  = "my-dagrelay-prod"
region      = "europe-west1"
name_prefix = "dagrelay"

private_network                   = true               # private IP + VPC connector
db_tier                           = "db-custom-1-3840" # 1 vCPU, 3.75 GB: about 100 connections
db_availability_type              = "REGIONAL"
db_retained_backups               = 14
db_transaction_log_retention_days = 7
deletion_protection               = true
force_destroy_buckets             = false

# 20 x (2 + 2) + 10 others = 90 of the 97 usable connections; 20 x 100 = 2,000 tasks in flight.
router_max_instances = 20
router_concurrency   = 100
db_pool_size         = 2
db_max_overflow      = 2

status_ingress  = "ALLOW_ALL" # IAM still required
status_invokers = ["group:dagrelay-oncall@example.com"]

notification_channels = ["projects/my-dagrelay-prod/notificationChannels/1234567890"]
