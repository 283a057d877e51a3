# Source this file (`. scripts/env.sh`) to use the project's Pulumi toolchain: it puts the
# CLI, the Python language host and the project venv on PATH and sets the offline, no-login
# defaults. Variables already set in your shell win (except PATH entries, which are prepended).
# shellcheck shell=bash

: "${ML_ENDPOINTS_CACHE:=$HOME/.cache/ml-endpoints}"
export ML_ENDPOINTS_CACHE

_mle_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
# Only the one version it needs, from the versions file (sourcing it would set every
# *_VERSION in the caller's shell).
_mle_pulumi_version=$(sed -n 's/^PULUMI_VERSION=//p' "$_mle_root/mlendpoints/versions.env")
_mle_path_add() { case ":$PATH:" in *":$1:"*) ;; *) PATH="$1:$PATH" ;; esac; }
_mle_path_add "$_mle_root/.venv/bin"
_mle_path_add "$ML_ENDPOINTS_CACHE/tools/pulumi-$_mle_pulumi_version/bin"
export PATH
unset -f _mle_path_add
unset _mle_root _mle_pulumi_version

# Plugins are installed here by scripts/setup_pulumi.sh (not in ~/.pulumi).
: "${PULUMI_HOME:=$ML_ENDPOINTS_CACHE/pulumi-home}"
# No account, no downloads: local state, passphrase secrets, no update checks.
# metadata=skip: no ".attrs" sidecar files. fileblob rewrites them in place (not atomically),
# so a read during a write (the program reading its own last outputs while `up` saves a
# checkpoint) failed with "failed to load checkpoint: EOF".
: "${PULUMI_BACKEND_URL:=file://$ML_ENDPOINTS_CACHE/state?metadata=skip}"
: "${PULUMI_CONFIG_PASSPHRASE:=ml-endpoints-local-dev}"   # dev default only: set your own for shared state
export PULUMI_HOME PULUMI_BACKEND_URL PULUMI_CONFIG_PASSPHRASE
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_DISABLE_REGISTRY_RESOLVE=true
export GOTOOLCHAIN=local
_mle_state=${PULUMI_BACKEND_URL#file://}
case $PULUMI_BACKEND_URL in file://*) mkdir -p "${_mle_state%%\?*}" ;; esac
unset _mle_state
