# Pinned versions. `terraform init` records the exact provider builds in .terraform.lock.hcl;
# commit that file after the first init so every deploy uses the same builds.
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

provider "google" {
  project = var.project_id
  region  = var.region

  # Every resource that takes labels gets these too.
  default_labels = var.labels
}
