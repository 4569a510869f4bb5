# Cloud SQL for PostgreSQL 15, reached only through the Cloud SQL connectors (default: a public IP
# with no authorized networks and connector_enforcement = REQUIRED; private_network = true: a
# private IP only), and the dagrelay database, user and password.
# The password is generated here, kept in Secret Manager, and handed to the functions as a secret
# environment variable (DAGRELAY_DB_PASSWORD). It is also in the Terraform state, like every
# generated secret: keep the state in a private, access-controlled bucket.

# Instance names cannot be reused for about a week after deletion: a suffix lets a torn-down
# environment be recreated at once.
resource "random_id" "db_suffix" {
  byte_length = 3
}

resource "google_sql_database_instance" "main" {
  #checkov:skip=CKV_GCP_60:The default path (private_network = false) gives the instance a public IP to avoid the always-on VPC connector; it lists no authorized networks and connector_enforcement = REQUIRED refuses every connection that does not come through a Cloud SQL connector (IAM cloudsql.client, ephemeral client certificate, TLS), so no address on the internet can open a PostgreSQL session. private_network = true removes the public IP.
  #checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY refuses every unencrypted connection. Client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) add nothing here: connector_enforcement = REQUIRED admits only the Cloud SQL connectors, which always present an ephemeral client certificate, and every client authenticates with IAM (cloudsql.client) plus the password.
  #checkov:skip=CKV_GCP_110:pgAudit would log every statement of the engine's hot path (claims, checked updates, outbox), multiplying log volume and cost; the database flags below log connections, DDL, errors and lock waits. Enable cloudsql.enable_pgaudit where an audit mandate requires it.
  #checkov:skip=CKV2_GCP_13:log_duration writes one line per statement (the same volume problem as pgAudit); Query Insights (insights_config) records statement latency instead.
  #checkov:skip=CKV_GCP_79:PostgreSQL 15 is the version dagrelay is built and tested on (the local stack and the tests run it); a major upgrade is a deliberate change, not a lint fix.
  name             = "${local.prefix}-pg-${random_id.db_suffix.hex}"
  region           = var.region
  database_version = "POSTGRES_15"

  # Both guards: Terraform refuses to destroy, and the Cloud SQL API refuses to delete.
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE" # shared-core tiers exist only on Enterprise
    availability_type           = var.db_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = var.labels

    # Only the Cloud SQL connectors (the Python connector, the Auth Proxy) may connect: each
    # connection is authorised by IAM (cloudsql.client) and encrypted with an ephemeral client
    # certificate, whatever the IP path.
    connector_enforcement = "REQUIRED"

    ip_configuration {
      # Default: a public IP with no authorized networks (only the connectors get through).
      # private_network = true: a private IP in the VPC only (network.tf).
      ipv4_enabled    = !var.private_network
      private_network = var.private_network ? google_compute_network.vpc[0].id : null
      # TLS on every connection; the Cloud SQL Python Connector always uses TLS.
      ssl_mode = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      start_time                     = var.db_backup_start_time
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = var.db_transaction_log_retention_days

      backup_retention_settings {
        retained_backups = var.db_retained_backups
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7 # Sunday
      hour         = 4 # UTC, after the backup window
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    # Logging flags recommended by the CIS benchmark.
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
  }

  # With private_network, the private IP comes from the reserved range: the peering first.
  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "dagrelay" {
  name     = var.db_name
  instance = google_sql_database_instance.main.name
}

resource "random_password" "db" {
  length = 32
  # Only characters that need no quoting in a shell, a URL or a connection string.
  special          = true
  override_special = "-_"
}

resource "google_sql_user" "dagrelay" {
  name     = var.db_user
  instance = google_sql_database_instance.main.name
  password = random_password.db.result

  # The migrations make this user own every table; PostgreSQL refuses to drop a role that owns
  # objects, so destroying the user alone would fail. The instance's deletion removes it.
  deletion_policy = "ABANDON"
}

resource "google_secret_manager_secret" "db_password" {
  secret_id = "${local.prefix}-db-password"

  # Kept in the deployment's region only.
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "db_password" {
  secret      = google_secret_manager_secret.db_password.id
  secret_data = random_password.db.result
}
