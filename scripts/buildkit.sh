#!/usr/bin/env bash
# BuildKit for the image builds of the Pulumi program (pulumi-docker-build, docs/toolchain.md):
# builds buildkitd, buildctl and buildx from their Go modules (cached by version under
# $ML_ENDPOINTS_CACHE/tools), runs buildkitd as a local daemon on a unix socket (the OCI
# worker with Debian's runc: no container, no privileges beyond root's), and registers it as
# the buildx `remote` builder `ml-endpoints`, the builder the program names.
#
# pulumi-docker-build supports only buildx's docker-container, kubernetes and remote drivers;
# with no builder it creates a docker-container one, which pulls moby/buildkit from Docker Hub
# (impossible offline) and needs a privileged container (refused on these VMs). So the daemon
# runs here, and the registry on $ML_ENDPOINTS_REGISTRY_ADDR doubles as its Docker Hub mirror:
# `FROM ml-endpoints/base:bookworm` resolves to the base image scripts/base_image.sh pushed.
#
# Usage: scripts/buildkit.sh [build|start|builder|status|stop]...
#   (no argument = build start builder; each part is idempotent and runnable alone)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
TOOLS=$ML_ENDPOINTS_CACHE/tools
BUILD=$ML_ENDPOINTS_CACHE/build
BK_DIR=$TOOLS/buildkit-$BUILDKIT_VERSION
BX_DIR=$TOOLS/buildx-$BUILDX_VERSION
RUN_DIR=$ML_ENDPOINTS_CACHE/buildkit
SOCK=$RUN_DIR/buildkitd.sock
PIDFILE=$RUN_DIR/buildkitd.pid
CONF=$RUN_DIR/buildkitd.toml
LOG=$ML_ENDPOINTS_LOGS/buildkitd.log
REGISTRY=${ML_ENDPOINTS_REGISTRY_ADDR:-127.0.0.1:5000}
BUILDER=${ML_ENDPOINTS_BUILDER:-ml-endpoints}

# go_install DEST MODULE VERSION PKG...: `go install PKG@VERSION` into DEST/bin, version stamped
# through the module's version package. -v prints each package compiled (step's progress lines).
go_install() {
  local dest=$1 mod=$2 ver=$3; shift 3
  local pkgs=() p
  for p in "$@"; do pkgs+=("$p@$ver"); done
  GOBIN=$dest/bin go install -v -trimpath -ldflags "$(stamp_flags "$mod" "$ver")" "${pkgs[@]}"
}

stamp_flags() { echo "-s -w -X $1/version.Version=$2 -X $1/version.Package=$1"; }

install_buildkit() (
  stage=$BUILD/buildkit-$BUILDKIT_VERSION.stage work=$BUILD/buildkit-src
  mod=github.com/moby/buildkit
  # buildkit's go.mod has `exclude` directives, which `go install pkg@version` refuses: it is
  # built as the main module from a writable copy of the module (as the Kubernetes provider is).
  src=$(go mod download -json "$mod@$BUILDKIT_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p') || exit 1
  [ -n "$src" ] || exit 1
  rm -rf "$stage" "$work" && mkdir -p "$stage/bin" && cp -r "$src" "$work" && chmod -R u+w "$work" || exit 1
  cd "$work" || exit 1
  go build -v -trimpath -o "$stage/bin/" -ldflags "$(stamp_flags "$mod" "$BUILDKIT_VERSION")" \
    ./cmd/buildkitd ./cmd/buildctl || exit 1
  cd "$ROOT" && rm -rf "$work" || exit 1
  "$stage/bin/buildkitd" --version | grep -q "$BUILDKIT_VERSION" || exit 1
  rm -rf "$BK_DIR" && mv "$stage" "$BK_DIR" && echo "$BUILDKIT_VERSION" >"$BK_DIR/.stamp"
)

install_buildx() (
  stage=$BUILD/buildx-$BUILDX_VERSION.stage
  rm -rf "$stage" && mkdir -p "$stage/bin" || exit 1
  go_install "$stage" github.com/docker/buildx "$BUILDX_VERSION" github.com/docker/buildx/cmd/buildx || exit 1
  "$stage/bin/buildx" version | grep -q "$BUILDX_VERSION" || exit 1
  rm -rf "$BX_DIR" && mv "$stage" "$BX_DIR" && echo "$BUILDX_VERSION" >"$BX_DIR/.stamp"
)

build() {
  mkdir -p "$TOOLS" "$BUILD"
  if stamp_ok "$BK_DIR/.stamp" "$BUILDKIT_VERSION"; then
    say "buildkitd $BUILDKIT_VERSION: up to date ($BK_DIR)"
  else
    step --expect 600 "buildkit-$BUILDKIT_VERSION" install_buildkit
  fi
  if stamp_ok "$BX_DIR/.stamp" "$BUILDX_VERSION"; then
    say "buildx $BUILDX_VERSION: up to date ($BX_DIR)"
  else
    step --expect 600 "buildx-$BUILDX_VERSION" install_buildx
  fi
}

write_config() {
  mkdir -p "$RUN_DIR/root"
  cat >"$CONF.tmp" <<TOML
# Written by scripts/buildkit.sh.
root = "$RUN_DIR/root"
[grpc]
  address = ["unix://$SOCK"]
[worker.oci]
  enabled = true
  binary = "runc"
  gc = true
  reservedSpace = "2GB"
  maxUsedSpace = "20GB"
[worker.containerd]
  # The local cluster's containerd is not BuildKit's: never build into it.
  enabled = false
[registry."$REGISTRY"]
  http = true
  insecure = true
# No registry is reachable but the local one: Docker Hub names resolve there.
[registry."docker.io"]
  mirrors = ["$REGISTRY"]
TOML
  mv "$CONF.tmp" "$CONF"
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answering() { timeout 10 "$BK_DIR/bin/buildctl" --addr "unix://$SOCK" debug workers >/dev/null 2>&1; }

start_daemon() {
  rm -f "$SOCK"
  # setsid: the daemon outlives this script and make's process group.
  setsid "$BK_DIR/bin/buildkitd" --config "$CONF" </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 60); do
    answering && return 0
    running || break
    sleep 1
  done
  echo "buildkitd did not answer on $SOCK; last lines of $LOG:"
  tail -n 20 "$LOG"
  return 1
}

start() {
  stamp_ok "$BK_DIR/.stamp" "$BUILDKIT_VERSION" || die "buildkitd: run 'scripts/buildkit.sh build' first"
  [ "$(id -u)" = 0 ] || die "buildkitd: its OCI worker runs containers with runc, which needs root"
  if running && answering; then
    say "buildkitd: running (pid $(cat "$PIDFILE"), unix://$SOCK)"
    return 0
  fi
  write_config
  step "buildkitd-start" start_daemon
  say "buildkitd: running (pid $(cat "$PIDFILE"), unix://$SOCK, log: $LOG)"
}

buildx() { "$BX_DIR/bin/buildx" "$@"; }

builder() {
  stamp_ok "$BX_DIR/.stamp" "$BUILDX_VERSION" || die "buildx: run 'scripts/buildkit.sh build' first"
  if buildx inspect "$BUILDER" 2>/dev/null | grep -q "unix://$SOCK"; then
    say "buildx builder $BUILDER: registered (remote, unix://$SOCK)"
  else
    buildx rm "$BUILDER" >/dev/null 2>&1 || true
    buildx create --name "$BUILDER" --driver remote "unix://$SOCK" >/dev/null \
      || die "buildx create --driver remote unix://$SOCK failed"
    say "buildx builder $BUILDER: registered (remote, unix://$SOCK)"
  fi
}

status() {
  if running && answering; then
    echo "buildkitd running (pid $(cat "$PIDFILE"), unix://$SOCK, log: $LOG)"
  elif running; then
    echo "buildkitd started (pid $(cat "$PIDFILE")) but not answering on $SOCK; see $LOG"
    return 1
  else
    echo "buildkitd not running (start: scripts/buildkit.sh start)"
    return 1
  fi
}

stop() {
  if running; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 1 20); do running || break; sleep 0.5; done
    say "buildkitd: stopped"
  else
    say "buildkitd: not running"
  fi
  rm -f "$PIDFILE"
}

[ $# -gt 0 ] || set -- build start builder
for part in "$@"; do
  case $part in
    build|start|builder|status|stop) "$part" ;;
    *) die "unknown part '$part' (expected build, start, builder, status, stop)" ;;
  esac
done
