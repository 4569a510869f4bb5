#!/usr/bin/env bash
# Runs a `dagrelay` command against the deployed Cloud SQL instance through the Cloud SQL Python
# Connector (the functions' path): `schedule list`, `pipeline apply --dry-run FILE`, `db upgrade`.
# A deploy does not need it: `terraform apply` migrates and applies every pipeline of the archive
# inside GCP (deploy.tf, README.md "Deploy"). This is the operator's tool for everything else.
#
# Usage (from anywhere):  terraform/scripts/migrate.sh            # dagrelay db upgrade
#                         terraform/scripts/migrate.sh ARGS...    # dagrelay ARGS... on Cloud SQL,
#                             e.g. schedule list
#
# Settings come from the environment, else from `terraform output` of the root module
# (TF_ROOT, default terraform/deploy):
#   DAGRELAY_PROJECT_ID          project of the secret      (default: the instance's project)
#   DAGRELAY_CLOUD_SQL_INSTANCE  PROJECT:REGION:INSTANCE    (output cloud_sql_connection_name)
#   DAGRELAY_DB_NAME             database                   (output db_name)
#   DAGRELAY_DB_USER             user                       (output db_user)
#   DB_PASSWORD_SECRET           Secret Manager secret id   (output db_password_secret)
#   DAGRELAY_DB_IP_TYPE          public | private | psc     (output db_ip_type)
#   DAGRELAY                     the dagrelay command       (default: .venv/bin/dagrelay of the repo)
#
# Network: by default the instance admits the Cloud SQL connectors on its public IP, so this runs
# from any machine whose identity may connect. With private_network = true the instance has a
# private IP only, and this must run inside the VPC (output vpc_network).
#
# Credentials: gcloud's login reads the secret; the connector uses Application Default
# Credentials (`gcloud auth application-default login`, or the VM's service account). That
# identity needs roles/cloudsql.client and roles/secretmanager.secretAccessor on the secret.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$(dirname "$here")")"
# The root module whose outputs name the instance: terraform/deploy here, or TF_ROOT.
tf_dir="${TF_ROOT:-$repo/terraform/deploy}"

tf_output() {
    terraform -chdir="$tf_dir" output -raw "$1"
}

export DAGRELAY_CLOUD_SQL_INSTANCE="${DAGRELAY_CLOUD_SQL_INSTANCE:-$(tf_output cloud_sql_connection_name)}"
export DAGRELAY_DB_NAME="${DAGRELAY_DB_NAME:-$(tf_output db_name)}"
export DAGRELAY_DB_USER="${DAGRELAY_DB_USER:-$(tf_output db_user)}"
export DAGRELAY_DB_IP_TYPE="${DAGRELAY_DB_IP_TYPE:-$(tf_output db_ip_type)}"
secret="${DB_PASSWORD_SECRET:-$(tf_output db_password_secret)}"
project="${DAGRELAY_PROJECT_ID:-${DAGRELAY_CLOUD_SQL_INSTANCE%%:*}}"
dagrelay="${DAGRELAY:-$repo/.venv/bin/dagrelay}"

# A DATABASE_URL would take precedence over the connector settings: this script is for Cloud SQL.
unset DATABASE_URL DAGRELAY_DATABASE_URL

DAGRELAY_DB_PASSWORD="$(gcloud secrets versions access latest --secret="$secret" --project="$project")"
export DAGRELAY_DB_PASSWORD

if [ "$#" -eq 0 ]; then
    set -- db upgrade
fi
echo "dagrelay $* on $DAGRELAY_CLOUD_SQL_INSTANCE/$DAGRELAY_DB_NAME as $DAGRELAY_DB_USER ($DAGRELAY_DB_IP_TYPE IP)" >&2
# From the repository root, where migrations/ and alembic.ini live.
cd "$repo"
exec "$dagrelay" "$@"
