# BigQuery datasets the pipelines load and query. The router may run jobs in the project and edit
# data in these datasets only (iam.tf).

resource "google_bigquery_dataset" "datasets" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption by default; set default_encryption_configuration with a KMS key where policy requires CMEK.
  for_each = toset(var.bigquery_datasets)

  dataset_id  = each.value
  location    = local.bigquery_location
  description = "dagrelay pipelines: ${each.value}"

  # A dataset with tables is not deleted by `terraform destroy`: data outlives the deployment.
  delete_contents_on_destroy = false

  depends_on = [google_project_service.apis]
}
