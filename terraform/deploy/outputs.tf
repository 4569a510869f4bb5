# Every output of the module, under the same name (`terraform -chdir=terraform/deploy output`).

output "project_number" {
  description = "Project number (the Google service agents' emails contain it)."
  value       = module.dagrelay.project_number
}

output "router_function" {
  description = "Name of the event router function (and of its Cloud Run service, for logs)."
  value       = module.dagrelay.router_function
}

output "router_uri" {
  description = "HTTPS URL of the router. Internal ingress and IAM only: the push subscriptions call it."
  value       = module.dagrelay.router_uri
}

output "status_uri" {
  description = "HTTPS URL of the status function: curl -H \"Authorization: Bearer $(gcloud auth print-identity-token)\" \"$URI?batch_id=...\" (needs run.invoker, see status_invokers)."
  value       = module.dagrelay.status_uri
}

output "operate_uri" {
  description = "HTTPS URL of the operator dashboard (trigger, rerun, cancel); open it with an identity token of an operate_invokers member, e.g. through `gcloud run services proxy`."
  value       = module.dagrelay.operate_uri
}

output "events_topic" {
  description = "Topic id to publish dagrelay messages to (start_batch, rerun, cancel_batch, ...)."
  value       = module.dagrelay.events_topic
}

output "alerts_topic" {
  description = "Topic the router publishes terminal task failures to."
  value       = module.dagrelay.alerts_topic
}

output "alerts_subscription" {
  description = "Pull subscription that keeps the alerts for 7 days."
  value       = module.dagrelay.alerts_subscription
}

output "dead_letter_topic" {
  description = "Topic Pub/Sub moves a message to after 5 failed deliveries; the router records each one."
  value       = module.dagrelay.dead_letter_topic
}

output "router_subscription" {
  description = "Push subscription of the events topic into the router."
  value       = module.dagrelay.router_subscription
}

output "cloud_sql_instance" {
  description = "Cloud SQL instance name (gcloud sql ...)."
  value       = module.dagrelay.cloud_sql_instance
}

output "cloud_sql_connection_name" {
  description = "PROJECT:REGION:INSTANCE, the value of DAGRELAY_CLOUD_SQL_INSTANCE."
  value       = module.dagrelay.cloud_sql_connection_name
}

output "cloud_sql_private_ip" {
  description = "Private IP of the instance (reachable from the VPC only)."
  value       = module.dagrelay.cloud_sql_private_ip
}

output "db_name" {
  description = "Metadata database name (DAGRELAY_DB_NAME)."
  value       = module.dagrelay.db_name
}

output "db_user" {
  description = "Database user (DAGRELAY_DB_USER)."
  value       = module.dagrelay.db_user
}

output "db_password_secret" {
  description = "Secret Manager secret id holding the database password: gcloud secrets versions access latest --secret=THIS."
  value       = module.dagrelay.db_password_secret
}

output "buckets" {
  description = "Bucket names: inbox (files under inbox/<source>/ are ingested; staging/, archive/ and rejected/ are ingestion's)."
  value       = module.dagrelay.buckets
}

output "bigquery_datasets" {
  description = "BigQuery dataset ids the router may write to."
  value       = module.dagrelay.bigquery_datasets
}

output "service_accounts" {
  description = "Emails of the service accounts: router, status and operate (runtimes), push_invoker, builder."
  value       = module.dagrelay.service_accounts
}

output "vpc_network" {
  description = "VPC holding Cloud SQL's private services access and the functions' connector (private_network only; null otherwise)."
  value       = module.dagrelay.vpc_network
}

output "vpc_connector_subnet" {
  description = "Subnet of the VPC connector (private_network only; null otherwise)."
  value       = module.dagrelay.vpc_connector_subnet
}

output "db_ip_type" {
  description = "How the Cloud SQL connectors reach the instance (DAGRELAY_DB_IP_TYPE): public (only connectors admitted) or private (private_network)."
  value       = module.dagrelay.db_ip_type
}

output "deploy_uri" {
  description = "HTTPS URL of the deploy function that terraform apply calls once per archive (scripts/deploy.sh); IAM only."
  value       = module.dagrelay.deploy_uri
}

output "deployed_archive" {
  description = "md5 of the function archive this apply deployed (the deploy step recorded it in the database)."
  value       = module.dagrelay.deployed_archive
}
