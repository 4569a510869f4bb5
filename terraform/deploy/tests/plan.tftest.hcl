# Offline plan of the repository's root (`make terraform-check`; README.md, "What is verified"):
# run once as it is (the defaults) and once with -var-file=../examples/prod.tfvars (the
# production profile). The providers are mocks; the module's validations, for_each keys and
# functions are evaluated through this root's wiring.

mock_provider "google" {}
mock_provider "random" {}

variables {
  project_id = "my-dagrelay-dev"
  region     = "europe-west1"
}

# The plan succeeds: that is the check (the module's outputs are unknown until apply).
run "plan" {
  command = plan
}
