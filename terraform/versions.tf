# Pinned versions. `terraform init` records the exact provider builds in .terraform.lock.hcl;
# commit that file after the first init so every deploy uses the same builds.
#
# terraform/ is a module: it configures no provider. The root that calls it does
# (terraform/deploy/ here; `dagrelay init` writes one into a team's project), so the module
# can be called from any root, with count or for_each, and removed cleanly.
terraform {
  # 1.5: check blocks and optional() object attributes with defaults; terraform_data is built in.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.14"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
