#!/usr/bin/env bash
# Provides the Python 3.11 base image the project's Dockerfiles build on, and pushes it to the
# local registry. In order:
#   1. $ML_ENDPOINTS_BASE_IMAGE if set (e.g. python:3.11-slim on a machine with internet);
#   2. python:3.11-slim when it can be pulled;
#   3. otherwise a Debian bookworm minbase made with debootstrap (python3, python3-venv,
#      ca-certificates; ~190 MB), imported with `docker import` and cached as a tarball under
#      $ML_ENDPOINTS_CACHE/images so a lost Docker data dir re-imports in seconds.
# The chosen local name is written to $ML_ENDPOINTS_CACHE/images/base-image.ref; the Dockerfiles
# take it as the BASE_IMAGE build argument.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DOCKER=/usr/bin/docker
REGISTRY=${ML_ENDPOINTS_REGISTRY_ADDR:-127.0.0.1:5000}
DIR=$ML_ENDPOINTS_CACHE/images
REF_FILE=$DIR/base-image.ref
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
LOCAL_NAME=ml-endpoints/base:$SUITE   # the default base_image of components.Environment
TARBALL=$DIR/python-base-3.11-$SUITE.tar.gz
KEY="$SUITE $PACKAGES v1"
MIRROR=${ML_ENDPOINTS_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

mkdir -p "$DIR"
"$DOCKER" version >/dev/null 2>&1 || die "base image: no Docker engine answers; run scripts/setup_docker.sh first"

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

push_local() {
  local target=$REGISTRY/$LOCAL_NAME
  "$DOCKER" tag "$1" "$target" && "$DOCKER" push "$target"
}

# in_registry: the local registry (when running) already holds the base image.
in_registry() {
  local name=${LOCAL_NAME%%:*} tag=${LOCAL_NAME##*:}
  curl -fsS -m 5 -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/$name/manifests/$tag" 2>/dev/null
}

use_ref() {
  printf '%s\n' "$1" > "$REF_FILE.tmp" && mv "$REF_FILE.tmp" "$REF_FILE"
}

# `step` runs these inside `if`, where bash ignores `set -e`: each command checks for itself.
build_rootfs() {
  local root=$DIR/rootfs.tmp
  rm -rf "$root" "$TARBALL.tmp" "$TARBALL.stamp"
  command -v debootstrap >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }; } || return 1
  echo "debootstrap --variant=minbase $SUITE from $MIRROR (+ $PACKAGES)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" || return 1
  # Keep the image small and free of the build host's details.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
    "$root"/usr/share/doc/* "$root"/usr/share/man/*
  printf 'nameserver 127.0.0.1\n' > "$root/etc/resolv.conf" || return 1
  tar --numeric-owner -C "$root" -czf "$TARBALL.tmp" . || return 1
  rm -rf "$root"
  mv "$TARBALL.tmp" "$TARBALL" && echo "$KEY" > "$TARBALL.stamp"
}

import_rootfs() {
  "$DOCKER" import \
    -c 'ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1' \
    -c 'CMD ["python3"]' \
    -m "Debian $SUITE minbase + $PACKAGES (scripts/base_image.sh)" \
    "$TARBALL" "$LOCAL_NAME" || return 1
  "$DOCKER" run --rm --network none "$LOCAL_NAME" python3 -c 'import sys, venv, ssl; assert sys.version_info[:2] == (3, 11), sys.version' || return 1
  push_local "$LOCAL_NAME"
}

if [ -n "${ML_ENDPOINTS_BASE_IMAGE:-}" ]; then
  have_image "$ML_ENDPOINTS_BASE_IMAGE" || step "base-image-pull" "$DOCKER" pull "$ML_ENDPOINTS_BASE_IMAGE"
  use_ref "$ML_ENDPOINTS_BASE_IMAGE"
  say "base image: $ML_ENDPOINTS_BASE_IMAGE (from ML_ENDPOINTS_BASE_IMAGE)"
  exit 0
fi

if stamp_ok "$DIR/base-image.stamp" "$KEY" && have_image "$LOCAL_NAME"; then
  in_registry || step "base-image-push" push_local "$LOCAL_NAME"
  use_ref "$LOCAL_NAME"
  say "base image: $LOCAL_NAME up to date"
  exit 0
fi
if have_image python:3.11-slim || timeout 60 "$DOCKER" pull python:3.11-slim >/dev/null 2>&1; then
  use_ref python:3.11-slim
  say "base image: python:3.11-slim (pulled)"
  exit 0
fi
rm -f "$DIR/base-image.stamp"
if ! stamp_ok "$TARBALL.stamp" "$KEY" || [ ! -f "$TARBALL" ]; then
  step --expect 120 "base-image-debootstrap" build_rootfs
fi
step "base-image-import" import_rootfs
echo "$KEY" > "$DIR/base-image.stamp"
use_ref "$LOCAL_NAME"
say "base image: $LOCAL_NAME ($("$DOCKER" image inspect -f '{{.Size}}' "$LOCAL_NAME" | awk '{printf "%d MB", $1/1e6}'); also $REGISTRY/$LOCAL_NAME)"
