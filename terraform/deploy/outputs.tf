# The module's outputs that scripts/migrate.sh and the README's steps read
# (`terraform -chdir=terraform/deploy output -raw NAME`); `module.dagrelay` has them all.
output "router_uri" {
  description = "HTTPS endpoint of the router function (Pub/Sub pushes here)."
  value       = module.dagrelay.router_uri
}

output "status_uri" {
  description = "HTTPS endpoint of the status function (the dashboard; IAM-authenticated)."
  value       = module.dagrelay.status_uri
}

output "cloud_sql_connection_name" {
  description = "PROJECT:REGION:INSTANCE, for the Cloud SQL Python Connector (migrate.sh)."
  value       = module.dagrelay.cloud_sql_connection_name
}

output "db_name" {
  description = "The metadata database."
  value       = module.dagrelay.db_name
}

output "db_user" {
  description = "The database user the functions log in as."
  value       = module.dagrelay.db_user
}

output "db_password_secret" {
  description = "Secret Manager secret id holding the database password."
  value       = module.dagrelay.db_password_secret
}

output "events_topic" {
  description = "The topic that starts batches (`dagrelay trigger`, Cloud Scheduler, GCS)."
  value       = module.dagrelay.events_topic
}

output "vpc_network" {
  description = "The VPC a migration runner (bastion) must sit in."
  value       = module.dagrelay.vpc_network
}
