# The variables' validations refuse bad input, each for the variable at fault (`make
# terraform-check`; README.md, "What is verified"). Mock providers: nothing reaches Google.

mock_provider "google" {}
mock_provider "random" {}

variables {
  project_id = "my-dagrelay-dev"
  region     = "europe-west1"
}

run "rejects_a_dataset_name_with_a_hyphen" {
  command = plan
  variables {
    bigquery_datasets = ["reports", "web-logs"]
  }
  expect_failures = [var.bigquery_datasets]
}

run "rejects_a_project_id_with_capitals" {
  command = plan
  variables {
    project_id = "My-Project"
  }
  expect_failures = [var.project_id]
}

run "rejects_a_public_status_invoker" {
  command = plan
  variables {
    status_invokers = ["allUsers"]
  }
  expect_failures = [var.status_invokers]
}
