# What a deploy prints, and what scripts/migrate.sh and the README's commands read
# (`terraform output -raw NAME`).

output "project_number" {
  description = "Project number (the Google service agents' emails contain it)."
  value       = data.google_project.this.number
}

output "router_function" {
  description = "Name of the event router function (and of its Cloud Run service, for logs)."
  value       = google_cloudfunctions2_function.router.name
}

output "router_uri" {
  description = "HTTPS URL of the router. Internal ingress and IAM only: the push subscriptions call it."
  value       = google_cloudfunctions2_function.router.service_config[0].uri
}

output "status_uri" {
  description = "HTTPS URL of the status function: curl -H \"Authorization: Bearer $(gcloud auth print-identity-token)\" \"$URI?batch_id=...\" (needs run.invoker, see status_invokers)."
  value       = google_cloudfunctions2_function.status.service_config[0].uri
}

output "operate_uri" {
  description = "HTTPS URL of the operator dashboard (trigger, rerun, cancel); open it with an identity token of an operate_invokers member, e.g. through `gcloud run services proxy`."
  value       = google_cloudfunctions2_function.operate.service_config[0].uri
}

output "events_topic" {
  description = "Topic id to publish dagrelay messages to (start_batch, rerun, cancel_batch, ...)."
  value       = google_pubsub_topic.events.name
}

output "alerts_topic" {
  description = "Topic the router publishes terminal task failures to."
  value       = google_pubsub_topic.alerts.name
}

output "alerts_subscription" {
  description = "Pull subscription that keeps the alerts for 7 days."
  value       = google_pubsub_subscription.alerts.name
}

output "dead_letter_topic" {
  description = "Topic Pub/Sub moves a message to after 5 failed deliveries; the router records each one."
  value       = google_pubsub_topic.dead_letter.name
}

output "router_subscription" {
  description = "Push subscription of the events topic into the router."
  value       = google_pubsub_subscription.router.name
}

output "cloud_sql_instance" {
  description = "Cloud SQL instance name (gcloud sql ...)."
  value       = google_sql_database_instance.main.name
}

output "cloud_sql_connection_name" {
  description = "PROJECT:REGION:INSTANCE, the value of DAGRELAY_CLOUD_SQL_INSTANCE."
  value       = google_sql_database_instance.main.connection_name
}

output "cloud_sql_private_ip" {
  description = "Private IP of the instance (private_network only, reachable from the VPC; empty otherwise)."
  value       = google_sql_database_instance.main.private_ip_address
}

output "db_name" {
  description = "Metadata database name (DAGRELAY_DB_NAME)."
  value       = google_sql_database.dagrelay.name
}

output "db_user" {
  description = "Database user (DAGRELAY_DB_USER)."
  value       = google_sql_user.dagrelay.name
}

output "db_password_secret" {
  description = "Secret Manager secret id holding the database password: gcloud secrets versions access latest --secret=THIS."
  value       = google_secret_manager_secret.db_password.secret_id
}

output "buckets" {
  description = "Bucket names: inbox (files under inbox/<source>/ are ingested; staging/, archive/ and rejected/ are ingestion's)."
  value       = { for k, b in google_storage_bucket.data : k => b.name }
}

output "bigquery_datasets" {
  description = "BigQuery dataset ids the router may write to."
  value       = [for d in google_bigquery_dataset.datasets : d.dataset_id]
}

output "service_accounts" {
  description = "Emails of the service accounts: router, status and operate (runtimes), push_invoker, builder."
  value = {
    router       = google_service_account.router.email
    status       = google_service_account.status.email
    operate      = google_service_account.operate.email
    push_invoker = google_service_account.push_invoker.email
    builder      = google_service_account.builder.email
  }
}

output "vpc_network" {
  description = "VPC holding Cloud SQL's private services access and the functions' connector (private_network only; null otherwise)."
  value       = one(google_compute_network.vpc[*].name)
}

output "vpc_connector_subnet" {
  description = "Subnet of the VPC connector (private_network only; null otherwise)."
  value       = one(google_compute_subnetwork.connector[*].name)
}

output "db_ip_type" {
  description = "How the Cloud SQL connectors reach the instance (DAGRELAY_DB_IP_TYPE): public (only connectors admitted) or private (private_network)."
  value       = local.db_ip_type
}

output "deploy_uri" {
  description = "HTTPS URL of the deploy function that terraform apply calls once per archive (scripts/deploy.sh); IAM only."
  value       = google_cloudfunctions2_function.deploy.service_config[0].uri
}

output "deployed_archive" {
  description = "md5 of the function archive this apply deployed (the deploy step recorded it in the database)."
  value       = terraform_data.deploy.triggers_replace.archive
}
