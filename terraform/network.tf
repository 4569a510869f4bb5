# The production network path (private_network = true): a VPC, private services access (a
# reserved range peered with Google's service producer network, where the instance gets its
# private IP) and a Serverless VPC Access connector through which the functions reach that IP.
#
# The default path (private_network = false) has none of it: the instance has a public IP with no
# authorized networks that accepts only the Cloud SQL connectors (connector_enforcement =
# REQUIRED, database.tf), so nothing here exists and nothing runs at idle. Why: the connector's
# two always-on e2-micro VMs were the second-largest idle cost, and google_cloudfunctions2_function
# (provider 6.x) exposes vpc_connector only, no direct VPC egress (README.md, "Network path").

resource "google_compute_network" "vpc" {
  count = var.private_network ? 1 : 0

  name                    = "${local.prefix}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.apis]
}

# Nothing needs to reach into this VPC: an explicit, logged deny of all ingress at the lowest
# priority documents that. The connector creates its own higher-priority allow rules for
# Google's serverless ranges, which this rule does not affect.
resource "google_compute_firewall" "deny_all_ingress" {
  count = var.private_network ? 1 : 0

  name      = "${local.prefix}-deny-all-ingress"
  network   = google_compute_network.vpc[0].id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "connector" {
  count = var.private_network ? 1 : 0

  name                     = "${local.prefix}-connector"
  network                  = google_compute_network.vpc[0].id
  region                   = var.region
  ip_cidr_range            = var.connector_cidr
  private_ip_google_access = true

  # Flow logs of the only subnet (connector traffic to Cloud SQL), sampled to keep them cheap.
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_global_address" "private_services" {
  count = var.private_network ? 1 : 0

  name          = "${local.prefix}-private-services"
  network       = google_compute_network.vpc[0].id
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.private_services_prefix_length
}

resource "google_service_networking_connection" "private_services" {
  count = var.private_network ? 1 : 0

  network                 = google_compute_network.vpc[0].id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services[0].name]

  # Removing the peering fails while the producer network still has resources (Cloud SQL is
  # deleted asynchronously); abandoning it lets `terraform destroy` finish, and the peering goes
  # away with the VPC.
  deletion_policy = "ABANDON"
}

resource "google_vpc_access_connector" "functions" {
  count = var.private_network ? 1 : 0

  name   = "${local.prefix}-conn"
  region = var.region

  subnet {
    name = google_compute_subnetwork.connector[0].name
  }

  machine_type  = var.connector_machine_type
  min_instances = 2
  max_instances = 3

  depends_on = [google_project_service.apis]
}
