#!/usr/bin/env bash
# Serves a local image registry on 127.0.0.1:5000 (Debian's docker-registry, distribution 2.8)
# from a config file under the cache, with its data under $ML_ENDPOINTS_CACHE/registry. The
# cluster pulls the project's images from it; Docker treats 127.0.0.0/8 registries as insecure-
# allowed, so no TLS is needed. Started when not answering, and left running.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ADDR=${ML_ENDPOINTS_REGISTRY_ADDR:-127.0.0.1:5000}
DIR=$ML_ENDPOINTS_CACHE/registry
CONF=$DIR/config.yml

registry_up() { curl -fsS -m 3 -o /dev/null "http://$ADDR/v2/" 2>/dev/null; }

install_registry() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker-registry || { apt-get update -q && apt-get install -y -q docker-registry; }
}

write_config() {
  mkdir -p "$DIR/data"
  cat >"$CONF.tmp" <<YAML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
YAML
  mv "$CONF.tmp" "$CONF"
}

start_registry() {
  local log=$ML_ENDPOINTS_LOGS/registry.log
  setsid /usr/bin/docker-registry serve "$CONF" >>"$log" 2>&1 < /dev/null &
  for _ in $(seq 1 30); do
    registry_up && return 0
    sleep 0.5
  done
  echo "registry did not answer on http://$ADDR/v2/ within 15s; last lines of $log:"
  tail -n 20 "$log"
  return 1
}

if registry_up; then
  say "registry: serving http://$ADDR"
  exit 0
fi
if ! command -v /usr/bin/docker-registry >/dev/null; then
  [ "$(id -u)" = 0 ] || die "registry: docker-registry is not installed and installing it needs root"
  step "registry-install" install_registry
fi
write_config
step "registry-start" start_registry
say "registry: serving http://$ADDR (data: $DIR/data, log: $ML_ENDPOINTS_LOGS/registry.log)"
