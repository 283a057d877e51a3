#!/usr/bin/env bash
# Deploys a stack (default: dev) with the real Pulumi CLI, then scores the sample request
# through the endpoint with the primary key, so the printed scoring URI is known to work.
#
# Usage: scripts/deploy.sh [STACK]         (make deploy STACK=dev)
#        scripts/deploy.sh --destroy [STACK]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

destroy=0
if [ "${1:-}" = --destroy ]; then destroy=1; shift; fi
stack=${1:-dev}
ML_ENDPOINTS_STACK=$stack . scripts/env.sh   # that stack's own passphrase
if [ ! -f "Pulumi.$stack.yaml" ]; then
  known=(Pulumi.*.yaml); known=("${known[@]#Pulumi.}"); known=("${known[@]%.yaml}")
  die "no Pulumi.$stack.yaml: stacks here are ${known[*]}"
fi
command -v pulumi >/dev/null || die "pulumi not found: run 'make setup' first"

pulumi stack select --create "$stack" >/dev/null
if [ "$destroy" = 1 ]; then
  pulumi destroy --yes --stack "$stack"
  exit 0
fi

say "pulumi up --stack $stack (builds images on first run; progress below)"
pulumi up --yes --skip-preview --stack "$stack"

uri=$(pulumi stack output scoring_uri --stack "$stack")
key=$(pulumi stack output primary_key --show-secrets --stack "$stack")
# The stack's CA: curl verifies the router's certificate against it (no -k).
ca=$(mktemp) cacert=()
trap 'rm -f "$ca"' EXIT
pulumi stack output ca_certificate --stack "$stack" > "$ca" 2>/dev/null || true
if grep -q 'BEGIN CERTIFICATE' "$ca"; then   # none: plain HTTP, or the user's own certificate
  cacert=(--cacert "$ca")
fi
request=samples/diabetes/sample-request.json
say "scoring $request through $uri"
# A new NodePort can take a few seconds to answer after `up` returns.
for _ in $(seq 1 30); do
  if answer=$(curl -fsS -m 10 "${cacert[@]}" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      --data-binary @"$request" "$uri" 2>/dev/null); then
    printf 'prediction: %s\n' "$answer"
    printf '\nscoring_uri: %s\n' "$uri"
    printf 'key:         pulumi stack output primary_key --show-secrets --stack %s\n' "$stack"
    [ ${#cacert[@]} -gt 0 ] && printf 'CA:          pulumi stack output ca_certificate --stack %s > %s-ca.pem\n' "$stack" "$stack"
    exit 0
  fi
  sleep 1
done
die "the endpoint at $uri did not answer within 30 s; see 'make cluster-status' and docs/README troubleshooting"
