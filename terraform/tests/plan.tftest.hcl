# The module's plan (`make terraform-check`; README.md, "What is verified"), run once as it is
# (the defaults) and once with -var-file=examples/prod.tfvars (the production profile): either
# way every variable's validation, every for_each key and every function call is evaluated, and
# every argument is checked against the provider's schema. The providers are mocks, so nothing
# reaches Google; their schemas come from schema-only plugins offline.

mock_provider "google" {}
mock_provider "random" {}

# The two required inputs.
variables {
  project_id = "my-dagrelay-dev"
  region     = "europe-west1"
}

run "plan" {
  command = plan

  assert {
    condition     = length(google_bigquery_dataset.datasets) == length(var.bigquery_datasets)
    error_message = "every name in bigquery_datasets is a dataset"
  }
}
