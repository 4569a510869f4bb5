#!/usr/bin/env bash
# Runs the metadata-database migrations (`dagrelay db upgrade`, i.e. alembic upgrade head) against
# the deployed Cloud SQL instance, through the Cloud SQL Python Connector (the same path the
# functions use). Run it after the database and the secret exist and before the functions roll
# out (README.md, "Deploy").
#
# Usage (from anywhere):  terraform/scripts/migrate.sh            # dagrelay db upgrade
#                         terraform/scripts/migrate.sh ARGS...    # dagrelay ARGS... on Cloud SQL,
#                             e.g. pipeline apply schema/pipelines/monthly_profit.yaml
#
# Settings come from the environment, else from `terraform output` of the root module
# (TF_ROOT, default terraform/deploy):
#   DAGRELAY_PROJECT_ID          project of the secret      (default: gcloud's current project)
#   DAGRELAY_CLOUD_SQL_INSTANCE  PROJECT:REGION:INSTANCE    (output cloud_sql_connection_name)
#   DAGRELAY_DB_NAME             database                   (output db_name)
#   DAGRELAY_DB_USER             user                       (output db_user)
#   DB_PASSWORD_SECRET           Secret Manager secret id   (output db_password_secret)
#   DAGRELAY_DB_IP_TYPE          private (default) | public | psc
#   DAGRELAY                     the dagrelay command       (default: .venv/bin/dagrelay of the repo)
#
# Network: the instance has a private IP only, so with DAGRELAY_DB_IP_TYPE=private this must run
# on a machine inside the VPC (output vpc_network), e.g. a small bastion VM with the repository
# checked out, or a CI runner / Cloud Build private pool peered with it. `public` is for setups
# where the instance also has a public IP (this Terraform never gives it one); do not add one just
# for migrations.
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
export DAGRELAY_DB_IP_TYPE="${DAGRELAY_DB_IP_TYPE:-private}"
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
