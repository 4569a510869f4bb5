# The deploy step: `terraform apply` migrates the database and applies every pipeline of the
# archive inside GCP, once per archive, and waits for the answer (README.md, "Deploy").
#
# The deploy function is built from the same archive (entry point `deploy`,
# dagrelay/ops/deploy.py). terraform_data.deploy calls it once per archive hash, from the machine
# running Terraform, over HTTPS with the caller's identity token (scripts/deploy.sh: no VPC
# reach, no bastion), and fails the apply when the step fails, naming the pipeline file. The
# router, status and operate functions depend on it, so new code never handles messages on an
# old schema.
#
# Why a function called by terraform_data and not a resource that waits by itself: the GA
# google provider's google_cloud_run_v2_job has no run_execution_token (beta only, and a job
# needs a container image of its own), google_cloudfunctions2_function cannot be invoked, and
# a data "http" source would run the step at every plan.

locals {
  deploy_function = "${local.prefix}-deploy"
  # The archive's md5, as in the uploaded object's name (functions.tf).
  archive_hash = filemd5(var.function_source_archive)
}

resource "google_cloudfunctions2_function" "deploy" {
  #checkov:skip=CKV_GCP_124:terraform apply calls this function from the machine running Terraform (a laptop or a CI runner, outside any VPC); every request still needs an identity token of a principal with run.invoker (the deployer), and no binding makes it public.
  name        = local.deploy_function
  location    = var.region
  description = "dagrelay deploy step: migrations to head and every pipeline of the archive, once per archive (called by terraform apply)."

  build_config {
    runtime         = "python311"
    entry_point     = "deploy"
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.deploy.email
    timeout_seconds                  = var.deploy_timeout_s
    available_memory                 = "512Mi"
    min_instance_count               = 0 # nothing runs between deploys
    max_instance_count               = 1
    max_instance_request_concurrency = 1
    # Never public: there is no allUsers binding, so every request needs run.invoker.
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true

    vpc_connector                 = local.vpc_connector
    vpc_connector_egress_settings = local.vpc_egress

    # The archive it runs: a request for another one (an old revision still serving) is refused.
    environment_variables = merge(local.function_env, { DAGRELAY_ARCHIVE_HASH = local.archive_hash })

    secret_environment_variables {
      key        = "DAGRELAY_DB_PASSWORD"
      project_id = var.project_id
      secret     = google_secret_manager_secret.db_password.secret_id
      version    = "latest"
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.deploy_db_password,
    google_secret_manager_secret_version.db_password,
    google_project_iam_member.builder,
    google_storage_bucket_iam_member.builder_source,
    google_sql_database.dagrelay,
    google_sql_user.dagrelay,
  ]
}

# Once per archive (and again on a new instance): POST {"archive": HASH} and wait for the result.
resource "terraform_data" "deploy" {
  triggers_replace = {
    archive  = local.archive_hash
    instance = google_sql_database_instance.main.connection_name
  }

  provisioner "local-exec" {
    command = "${path.module}/scripts/deploy.sh"
    environment = {
      DEPLOY_URL     = google_cloudfunctions2_function.deploy.service_config[0].uri
      DEPLOY_ARCHIVE = local.archive_hash
    }
  }
}
