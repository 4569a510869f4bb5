#!/usr/bin/env bash
# The deploy step, as `terraform apply` runs it (terraform_data.deploy in deploy.tf): POST
# {"archive": HASH} to the deploy function with the caller's identity token and wait for its
# answer. The function migrates Cloud SQL to head and applies every pipeline file of the archive
# (dagrelay/ops/deploy.py); the same archive again is a no-op, so a repeat is always safe.
#
#   DEPLOY_URL      the deploy function's URL      (output deploy_uri)
#   DEPLOY_ARCHIVE  the archive's md5              (the function-source-<md5>.zip object)
#   DEPLOY_WAIT_S   how long to retry an answer that may change (default 900 s)
#
# Needs curl and gcloud, logged in as an identity with run.invoker on the function (Owner and
# Cloud Run Admin have it): `gcloud auth login`, or a CI service account. Retried until the
# deadline: no answer, 409 (the new revision is not serving yet), 429, 502, 503, 504.
# Not retried: 200 (done, printed), 400, 403, 500 (the step failed: the answer names the file).
set -euo pipefail

url="${DEPLOY_URL:?DEPLOY_URL: the deploy function's URL}"
archive="${DEPLOY_ARCHIVE:?DEPLOY_ARCHIVE: the archive's hash}"
deadline=$(($(date +%s) + ${DEPLOY_WAIT_S:-900}))
answer="$(mktemp)"
trap 'rm -f "$answer"' EXIT

token() {
    # A service account can ask for the function's audience; a user's token is accepted as is.
    gcloud auth print-identity-token --audiences="$url" 2>/dev/null || gcloud auth print-identity-token
}

while :; do
    status="$(curl -sS -o "$answer" -w '%{http_code}' --max-time 3700 -X POST \
        -H "Authorization: Bearer $(token)" -H "Content-Type: application/json" \
        --data "{\"archive\": \"$archive\"}" "$url")" || status=000
    case "$status" in
    200)
        echo "dagrelay deploy step: $(cat "$answer")"
        exit 0
        ;;
    000 | 409 | 429 | 502 | 503 | 504)
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "dagrelay deploy step: no answer in time (last HTTP $status): $(cat "$answer")" >&2
            exit 1
        fi
        echo "dagrelay deploy step: HTTP $status, retrying: $(cat "$answer")" >&2
        sleep 10
        ;;
    *)
        echo "dagrelay deploy step FAILED (HTTP $status): $(cat "$answer")" >&2
        exit 1
        ;;
    esac
done
