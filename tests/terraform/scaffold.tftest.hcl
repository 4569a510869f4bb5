# The plan of the Terraform root `dagrelay init` writes (`make terraform-check` copies this file
# into a freshly written project's terraform/tests/; README.md, "What is verified"), run as it is
# and with -var-file=examples/prod.tfvars. The providers are mocks: nothing reaches Google.

mock_provider "google" {}
mock_provider "random" {}

variables {
  project_id = "my-team-project"
}

# The plan succeeds: that is the check.
run "plan" {
  command = plan
}
