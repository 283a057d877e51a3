#!/usr/bin/env bash
# Installs the Pulumi CLI, the Python language host (with its exec script and the dynamic
# provider script), the Kubernetes resource provider and the docker-build resource provider (the
# images) at the versions the Python SDK pins, under $ML_ENDPOINTS_CACHE/tools, and registers the
# providers in the project's PULUMI_HOME.
#
# Online (release downloads reachable) it unpacks the official release tarballs; offline it
# builds the Go binaries from their modules through the Go module proxy. Each part is built
# in a staging folder, moved into place, and stamped last: an interrupted run leaves nothing
# that a later run mistakes for done, and a finished part is skipped in well under a second.
#
# Usage: scripts/setup_pulumi.sh [--offline|--online] [cli|kubernetes|docker-build|plugins]...
#   (no part names = all parts; ML_ENDPOINTS_PULUMI_MODE=offline|online|auto, default auto)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh
. scripts/env.sh

# Versions (mlendpoints/versions.env, sourced by lib.sh): must equal the Python SDK pins
# (plugin look-ups are exact-version; check_pins below and tests/unit/test_versions.py).
K8S_VERSION=$PULUMI_KUBERNETES_VERSION
# Offline sources. The proxy serves pulumi/pkg/v3 and pulumi/sdk/v3 at the release tag, but
# pulumi-kubernetes' provider/v4 module (untagged) only at the pseudo-version below: the
# provider source as of 2026-01-15, after v4.24.0 (its go.mod requires sdk v4.24.0) and one
# day before v4.25.0. So the Python SDK is pinned to 4.24.0 and the binary is stamped
# $K8S_VERSION: the provider knows every resource and field the SDK can send (never the other
# way round). docs/toolchain.md, "Versions". Sums pin the downloaded zips, since the checksum
# database has no entry for these two.
K8S_PROVIDER_MOD=github.com/pulumi/pulumi-kubernetes/provider/v4
K8S_PROVIDER_MODVER=v4.0.0-20260115033456-f47bc2d6f199
K8S_PROVIDER_SUM=h1:j2bphCf7c2YhnBrhwht2f3TNRRgcMImltUlAgzxr9H4=
K8S_SDK_MOD=github.com/pulumi/pulumi-kubernetes/sdk/v4
K8S_SDK_MODVER=v4.24.0   # what that provider commit's go.mod requires (replaced by ../sdk)
K8S_SDK_SUM=h1:dlDJvsugKow8tCaD0yJngc7PXdv8WT2YwPEUmj48tF4=

# shellcheck disable=SC2054  # the comma joins two Go build tags in one -tags value
GO_BUILD_FLAGS=(-trimpath -tags osusergo,grpcnotrace)
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

TOOLS=$ML_ENDPOINTS_CACHE/tools
BUILD=$ML_ENDPOINTS_CACHE/build
CLI_DIR=$TOOLS/pulumi-$PULUMI_VERSION
K8S_DIR=$TOOLS/pulumi-kubernetes-$K8S_VERSION
DB_VERSION=$PULUMI_DOCKER_BUILD_VERSION
DB_DIR=$TOOLS/pulumi-docker-build-$DB_VERSION

mode=${ML_ENDPOINTS_PULUMI_MODE:-auto}
parts=()
for a in "$@"; do
  case $a in
    --offline) mode=offline ;;
    --online) mode=online ;;
    cli|kubernetes|docker-build|plugins) parts+=("$a") ;;
    *) die "unknown argument '$a' (expected --offline, --online, cli, kubernetes, docker-build, plugins)" ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(cli kubernetes docker-build plugins)

check_pins() {
  local c=constraints.txt
  grep -qx "pulumi==$PULUMI_VERSION" $c || die "constraints.txt does not pin pulumi==$PULUMI_VERSION; update PULUMI_VERSION in mlendpoints/versions.env with it"
  grep -qix "pulumi[-_]kubernetes==$K8S_VERSION" $c || die "constraints.txt does not pin pulumi_kubernetes==$K8S_VERSION; update PULUMI_KUBERNETES_VERSION in mlendpoints/versions.env with it"
  grep -qix "pulumi[-_]docker[-_]build==$DB_VERSION" $c || die "constraints.txt does not pin pulumi-docker-build==$DB_VERSION; update PULUMI_DOCKER_BUILD_VERSION in mlendpoints/versions.env with it"
}

release_reachable() {
  curl -fsS -m 5 -o /dev/null -I "https://get.pulumi.com/releases/sdk/pulumi-v$PULUMI_VERSION-linux-x64.tar.gz" 2>/dev/null
}

resolve_mode() {
  case $mode in
    offline|online) ;;
    auto) if release_reachable; then mode=online; else mode=offline; fi ;;
    *) die "ML_ENDPOINTS_PULUMI_MODE=$mode: expected offline, online or auto" ;;
  esac
}

arch() { case $(uname -m) in x86_64) echo x64 ;; aarch64|arm64) echo arm64 ;; *) die "unsupported CPU $(uname -m)" ;; esac; }

# key_of WORDS...: the stamp content of a part; changes when its inputs change.
key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

cli_key() { key_of "$mode" "$PULUMI_VERSION" "$(cat "$ROOT"/tools/pulumi/go.mod "$ROOT"/tools/pulumi/go.sum "$ROOT"/tools/pulumi/cmd/*/*.go | sha256sum)"; }
k8s_key() { key_of "$mode" "$K8S_VERSION" "$K8S_PROVIDER_MODVER" "$K8S_SDK_MODVER"; }
db_key() { key_of "$mode" "$DB_VERSION" "$(cd "$ROOT/tools/docker-build" && find . -type f | LC_ALL=C sort | xargs cat | sha256sum)"; }

# --- CLI + Python language host ---------------------------------------------------------------
# Note: `step` runs these inside `if`, where bash ignores `set -e`, so every command that can
# fail carries its own `|| exit 1` / `|| return 1`.
build_cli_offline() (
  stage=$1
  cd "$ROOT/tools/pulumi" || exit 1
  # No `go mod download`: it also asks the proxy for every module's .info, which this proxy
  # refuses for some pinned pseudo-versions (gocloud.dev); `go build` fetches only what it needs.
  echo "downloading Go modules as needed and building pulumi + pulumi-language-python"
  go build -v "${GO_BUILD_FLAGS[@]}" -o "$stage/bin/" \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi ./cmd/pulumi-language-python || exit 1
  sdk=$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3) || exit 1
  install -m755 "$sdk/python/cmd/pulumi-language-python-exec" \
    "$sdk/python/dist/pulumi-resource-pulumi-python" "$stage/bin/" || exit 1
)

build_cli_online() {
  local stage=$1 tgz
  tgz="$BUILD/pulumi-v$PULUMI_VERSION-linux-$(arch).tar.gz"
  curl -fsSL --retry 3 -o "$tgz" "https://get.pulumi.com/releases/sdk/pulumi-v$PULUMI_VERSION-linux-$(arch).tar.gz" || return 1
  mkdir -p "$stage/bin" && tar -xzf "$tgz" -C "$stage/bin" --strip-components=1 || return 1
  rm -f "$tgz"
}

install_cli() (
  stage=$BUILD/pulumi-$PULUMI_VERSION.stage
  rm -rf "$stage" && mkdir -p "$stage/bin" "$BUILD" "$TOOLS" || exit 1
  "build_cli_$mode" "$stage" || exit 1
  got=$("$stage/bin/pulumi" version) || exit 1
  [ "$got" = "v$PULUMI_VERSION" ] || die "built pulumi reports '$got', expected v$PULUMI_VERSION"
  for f in pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python; do
    [ -x "$stage/bin/$f" ] || die "$f missing from $stage/bin"
  done
  rm -rf "$CLI_DIR" && mv "$stage" "$CLI_DIR"
)

# --- Kubernetes provider ------------------------------------------------------------------------
# mod_dir MODULE VERSION SUM: download a module zip, check its hash, print its folder.
mod_dir() {
  local json dir sum
  json=$(GONOSUMDB=github.com/pulumi/pulumi-kubernetes go mod download -json "$1@$2")
  dir=$(printf '%s' "$json" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  sum=$(printf '%s' "$json" | sed -n 's/^\t"Sum": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { printf '%s\n' "$json" >&2; return 1; }
  [ "$sum" = "$3" ] || { echo "$1@$2: hash $sum, expected $3" >&2; return 1; }
  printf '%s\n' "$dir"
}

build_k8s_offline() (
  stage=$1 work=$BUILD/pulumi-kubernetes-src
  provider=$(mod_dir "$K8S_PROVIDER_MOD" "$K8S_PROVIDER_MODVER" "$K8S_PROVIDER_SUM") || exit 1
  sdk=$(mod_dir "$K8S_SDK_MOD" "$K8S_SDK_MODVER" "$K8S_SDK_SUM") || exit 1
  # The provider's go.mod replaces the SDK with ../sdk and its main package embeds files that
  # only `go generate` writes, so it is built as the main module from a writable copy.
  rm -rf "$work" && mkdir -p "$work" || exit 1
  cp -r "$provider" "$work/provider" && cp -r "$sdk" "$work/sdk" && chmod -R u+w "$work" || exit 1
  cd "$work/provider" || exit 1
  echo "go generate (stamps the schema with $K8S_VERSION)"
  VERSION=$K8S_VERSION go generate ./cmd/pulumi-resource-kubernetes || exit 1
  echo "building pulumi-resource-kubernetes"
  go build -v -trimpath -o "$stage/bin/" \
    -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$K8S_VERSION" \
    ./cmd/pulumi-resource-kubernetes || exit 1
  cd "$ROOT" && rm -rf "$work"
)

build_k8s_online() {
  local stage=$1 tgz
  tgz="$BUILD/pulumi-resource-kubernetes-v$K8S_VERSION-linux-amd64.tar.gz"
  local a=amd64; [ "$(arch)" = arm64 ] && a=arm64
  curl -fsSL --retry 3 -o "$tgz" \
    "https://github.com/pulumi/pulumi-kubernetes/releases/download/v$K8S_VERSION/pulumi-resource-kubernetes-v$K8S_VERSION-linux-$a.tar.gz" || return 1
  tar -xzf "$tgz" -C "$stage/bin" pulumi-resource-kubernetes || return 1
  rm -f "$tgz"
}

install_k8s() (
  stage=$BUILD/pulumi-kubernetes-$K8S_VERSION.stage
  rm -rf "$stage" && mkdir -p "$stage/bin" "$BUILD" "$TOOLS" || exit 1
  "build_k8s_$mode" "$stage" || exit 1
  [ -x "$stage/bin/pulumi-resource-kubernetes" ] || die "provider binary missing from $stage/bin"
  rm -rf "$K8S_DIR" && mv "$stage" "$K8S_DIR"
)

# --- docker-build provider (the images: components/_images.py) ----------------------------------
# Built from the wrapper module tools/docker-build/, which requires the provider's module at the
# release tag: `go install ...@v0.0.22` fails here because the proxy refuses the module's version
# list, and two of its imports (pulumi-java, pulumi-language-dotnet) are refused outright. The
# provider uses them only for two schema-metadata struct types, so tools/docker-build/stubs/
# declares those and go.mod replaces the two modules with them. Unstamped, the binary reports
# 0.0.1 and Pulumi warns: the version is set by ldflags.
build_db_offline() (
  stage=$1
  cd "$ROOT/tools/docker-build" || exit 1
  echo "downloading Go modules as needed and building pulumi-resource-docker-build"
  go build -v "${GO_BUILD_FLAGS[@]}" -o "$stage/bin/" \
    -ldflags "-s -w -X github.com/pulumi/pulumi-docker-build/provider.Version=$DB_VERSION" \
    github.com/pulumi/pulumi-docker-build/provider/cmd/pulumi-resource-docker-build || exit 1
)

build_db_online() {
  local stage=$1 tgz a=amd64
  [ "$(arch)" = arm64 ] && a=arm64
  tgz="$BUILD/pulumi-resource-docker-build-v$DB_VERSION-linux-$a.tar.gz"
  curl -fsSL --retry 3 -o "$tgz" \
    "https://github.com/pulumi/pulumi-docker-build/releases/download/v$DB_VERSION/pulumi-resource-docker-build-v$DB_VERSION-linux-$a.tar.gz" || return 1
  tar -xzf "$tgz" -C "$stage/bin" pulumi-resource-docker-build || return 1
  rm -f "$tgz"
}

install_db() (
  stage=$BUILD/pulumi-docker-build-$DB_VERSION.stage
  rm -rf "$stage" && mkdir -p "$stage/bin" "$BUILD" "$TOOLS" || exit 1
  "build_db_$mode" "$stage" || exit 1
  [ -x "$stage/bin/pulumi-resource-docker-build" ] || die "provider binary missing from $stage/bin"
  rm -rf "$DB_DIR" && mv "$stage" "$DB_DIR"
)

# --- plugin registration ------------------------------------------------------------------------
# PLUGINS: name version binary, one per provider.
PLUGINS=(
  "kubernetes $K8S_VERSION $K8S_DIR/bin/pulumi-resource-kubernetes"
  "docker-build $DB_VERSION $DB_DIR/bin/pulumi-resource-docker-build"
)

plugin_ok() { cmp -s "$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1" "$3"; }

plugins_ok() {
  local name version bin p
  for p in "${PLUGINS[@]}"; do
    read -r name version bin <<<"$p"
    plugin_ok "$name" "$version" "$bin" || return 1
  done
}

# Installs only the plugins that differ: a running stack's provider is never swapped needlessly.
register_plugins() {
  local name version bin p
  mkdir -p "$PULUMI_HOME" || return 1
  for p in "${PLUGINS[@]}"; do
    read -r name version bin <<<"$p"
    plugin_ok "$name" "$version" "$bin" && continue
    "$CLI_DIR/bin/pulumi" plugin install resource "$name" "$version" --file "$bin" --reinstall || return 1
  done
  "$CLI_DIR/bin/pulumi" plugin ls || return 1
  plugins_ok || die "plugins not in $PULUMI_HOME/plugins after install"
}

# --- main ---------------------------------------------------------------------------------------
# done_already DIR KEYFN: the part's stamp matches its inputs (in auto mode, either mode's install
# counts: a machine that went offline keeps the release binaries it has).
done_already() {
  local m
  for m in offline online; do
    if [ "$mode" = auto ] || [ "$mode" = "$m" ]; then
      stamp_ok "$1/.stamp" "$(mode=$m "$2")" && return 0
    fi
  done
  return 1
}

# build_part LABEL DIR KEYFN INSTALLFN STEP EXPECTED: skipped when DIR's stamp matches KEYFN;
# else installed by INSTALLFN (as step STEP-<mode>, EXPECTED seconds cold offline, measured on
# 2 busy cores) and stamped last.
build_part() {
  local label=$1 dir=$2 key_fn=$3 install_fn=$4 name=$5 expected=$6
  if done_already "$dir" "$key_fn"; then
    say "$label: up to date ($dir)"
    return 0
  fi
  resolve_mode
  rm -f "$dir/.stamp"
  if [ "$mode" = offline ]; then
    say "$label: building from Go modules"
  else
    expected=60
  fi
  step --expect "$expected" "$name-$mode" "$install_fn"
  "$key_fn" > "$dir/.stamp"
}

check_pins
for part in "${parts[@]}"; do
  case $part in
    cli)
      build_part "pulumi CLI v$PULUMI_VERSION + python language host" "$CLI_DIR" cli_key \
        install_cli "pulumi-cli-$PULUMI_VERSION" 360
      ;;
    kubernetes)
      build_part "kubernetes provider v$K8S_VERSION" "$K8S_DIR" k8s_key \
        install_k8s "pulumi-kubernetes-$K8S_VERSION" 1020
      ;;
    docker-build)
      build_part "docker-build provider v$DB_VERSION" "$DB_DIR" db_key \
        install_db "pulumi-docker-build-$DB_VERSION" 600
      ;;
    plugins)
      if [ ! -f "$CLI_DIR/.stamp" ] || [ ! -f "$K8S_DIR/.stamp" ] || [ ! -f "$DB_DIR/.stamp" ]; then
        die "plugins: run the 'cli', 'kubernetes' and 'docker-build' parts first"
      fi
      if plugins_ok; then
        say "plugins: kubernetes v$K8S_VERSION, docker-build v$DB_VERSION registered in $PULUMI_HOME"
      else
        say "registering kubernetes v$K8S_VERSION, docker-build v$DB_VERSION in $PULUMI_HOME"
        step "pulumi-plugins" register_plugins
      fi
      ;;
  esac
done
