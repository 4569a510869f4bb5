# The repository's own root: the provider configuration and the dagrelay module (terraform/).
# A team's project has its own root, written by `dagrelay init` (its terraform/ directory).
terraform {
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
