# The private path to Cloud SQL: a VPC, private services access (a reserved range peered with
# Google's service producer network, where the instance gets its private IP), and a Serverless VPC
# Access connector through which the functions reach that IP.
#
# Why a connector rather than direct VPC egress: google_cloudfunctions2_function (provider 6.x,
# Cloud Functions v2 API) exposes vpc_connector only. The connector's two e2-micro instances are
# the second-largest idle cost after Cloud SQL (README.md, "Cost at idle").

resource "google_compute_network" "vpc" {
  name                    = "${local.prefix}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.apis]
}

# Nothing needs to reach into this VPC: an explicit, logged deny of all ingress at the lowest
# priority documents that. The connector creates its own higher-priority allow rules for
# Google's serverless ranges, which this rule does not affect.
resource "google_compute_firewall" "deny_all_ingress" {
  name      = "${local.prefix}-deny-all-ingress"
  network   = google_compute_network.vpc.id
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
  name                     = "${local.prefix}-connector"
  network                  = google_compute_network.vpc.id
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
  name          = "${local.prefix}-private-services"
  network       = google_compute_network.vpc.id
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.private_services_prefix_length
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.vpc.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]

  # Removing the peering fails while the producer network still has resources (Cloud SQL is
  # deleted asynchronously); abandoning it lets `terraform destroy` finish, and the peering goes
  # away with the VPC.
  deletion_policy = "ABANDON"
}

resource "google_vpc_access_connector" "functions" {
  name   = "${local.prefix}-conn"
  region = var.region

  subnet {
    name = google_compute_subnetwork.connector.name
  }

  machine_type  = var.connector_machine_type
  min_instances = 2
  max_instances = 3

  depends_on = [google_project_service.apis]
}

# -- Admin subnet: where a short-lived bastion VM runs scripts/migrate.sh ---------------------------
# Cloud SQL has no public IP, so migrations run from inside the VPC (README.md, "Deploy"). The
# connector's subnet is reserved for the connector, hence a subnet of its own. The bastion has no
# external IP: SSH arrives through Identity-Aware Proxy, and Cloud NAT gives it outbound access
# to install dagrelay. Neither costs anything while no VM runs.

resource "google_compute_subnetwork" "admin" {
  name                     = "${local.prefix}-admin"
  network                  = google_compute_network.vpc.id
  region                   = var.region
  ip_cidr_range            = var.admin_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# SSH to VMs tagged as bastion, from IAP's TCP-forwarding range only.
resource "google_compute_firewall" "iap_ssh_bastion" {
  name          = "${local.prefix}-iap-ssh-bastion"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = ["35.235.240.0/20"]
  target_tags   = ["${local.prefix}-bastion"]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "admin" {
  name    = "${local.prefix}-nat-router"
  network = google_compute_network.vpc.id
  region  = var.region
}

resource "google_compute_router_nat" "admin" {
  name                               = "${local.prefix}-nat"
  router                             = google_compute_router.admin.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.admin.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}
