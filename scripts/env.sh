# Source this file (`. scripts/env.sh`) to use the project's Pulumi toolchain: it puts the
# CLI, the Python language host and the project venv on PATH and sets the offline, no-login
# defaults. Variables already set in your shell win (except PATH entries, which are prepended).
# shellcheck shell=bash

: "${ML_ENDPOINTS_CACHE:=$HOME/.cache/ml-endpoints}"
export ML_ENDPOINTS_CACHE

_mle_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_mle_stack_file=$_mle_root/Pulumi.${ML_ENDPOINTS_STACK:-dev}.yaml
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
export PULUMI_HOME PULUMI_BACKEND_URL
# Each stack has its own passphrase (never a shared default), generated on first use into
# $ML_ENDPOINTS_CACHE/state/ml-endpoints/<stack>.passphrase (0600, folders 0700), for the stack
# $ML_ENDPOINTS_STACK (default dev). Your own PULUMI_CONFIG_PASSPHRASE(_FILE), or a
# `secretsprovider:` URL in the stack file (a cloud KMS), win. The same rule as
# mlendpoints/stack.py (stack_passphrase), which the CLI and tests use.
_mle_dir=$ML_ENDPOINTS_CACHE/state/ml-endpoints
case ${PULUMI_CONFIG_PASSPHRASE_FILE:-} in "$_mle_dir"/*) unset PULUMI_CONFIG_PASSPHRASE_FILE ;; esac
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] \
   && ! grep -Eqs '^secretsprovider:[[:space:]]*[^[:space:]]+://' "$_mle_stack_file"; then
  _mle_file=$_mle_dir/${ML_ENDPOINTS_STACK:-dev}.passphrase
  if [ ! -s "$_mle_file" ]; then
    (
      umask 077
      mkdir -p "$_mle_dir" && chmod 700 "$_mle_dir" "$ML_ENDPOINTS_CACHE/state"
      if grep -qs '^encryptionsalt:' "$_mle_stack_file"; then
        # Made with the old shared default: keep it so the state still opens (docs/components.md).
        echo "note: stack ${ML_ENDPOINTS_STACK:-dev} uses the old shared passphrase; see docs/components.md, 'Secrets at rest'" >&2
        printf '%s\n' ml-endpoints-local-dev > "$_mle_file.tmp"
      else
        head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$_mle_file.tmp" && echo >> "$_mle_file.tmp"
      fi
      mv "$_mle_file.tmp" "$_mle_file"
    )
  fi
  export PULUMI_CONFIG_PASSPHRASE_FILE=$_mle_file
  unset _mle_file
fi
unset _mle_dir _mle_stack_file
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_DISABLE_REGISTRY_RESOLVE=true
export GOTOOLCHAIN=local
_mle_state=${PULUMI_BACKEND_URL#file://}
case $PULUMI_BACKEND_URL in file://*) mkdir -p "${_mle_state%%\?*}" && chmod 700 "${_mle_state%%\?*}" ;; esac
unset _mle_state
