#!/usr/bin/env bash
# Makes a Docker engine available: installs Debian's docker.io (with containerd and runc) when
# dockerd is absent, starts /usr/sbin/dockerd in the background when no daemon answers (its log
# goes to $ML_ENDPOINTS_CACHE/logs/dockerd.log), and waits until it does. The daemon is left
# running for the other set-up steps, the tests and deploys. Re-running is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# Debian's client matches the daemon (20.10) and has BuildKit; /usr/local/bin/docker may not.
DOCKER=/usr/bin/docker

daemon_up() { [ -x "$DOCKER" ] && timeout 10 "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

install_engine() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker.io containerd runc || { apt-get update -q && apt-get install -y -q docker.io containerd runc; }
}

start_daemon() {
  local log=$ML_ENDPOINTS_LOGS/dockerd.log
  # setsid: the daemon must outlive this script and make's process group.
  setsid /usr/sbin/dockerd >>"$log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    daemon_up && return 0
    sleep 1
  done
  echo "dockerd did not answer within 60s; last lines of $log:"
  tail -n 20 "$log"
  return 1
}

if daemon_up; then
  say "docker: engine $("$DOCKER" version --format '{{.Server.Version}}') running"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "docker: no engine answers and installing/starting one needs root; start dockerd yourself"
if [ ! -x /usr/sbin/dockerd ] || [ ! -x "$DOCKER" ]; then
  step "docker-install" install_engine
fi
step "docker-start" start_daemon
say "docker: engine $("$DOCKER" version --format '{{.Server.Version}}') running (log: $ML_ENDPOINTS_LOGS/dockerd.log)"
