# Shared shell helpers for the set-up scripts: steps that say what they do, how long they
# took, and on failure which step failed and where its log is.
# shellcheck shell=bash

: "${ML_ENDPOINTS_CACHE:=$HOME/.cache/ml-endpoints}"
export ML_ENDPOINTS_CACHE
ML_ENDPOINTS_LOGS="$ML_ENDPOINTS_CACHE/logs"
# Every pinned tool version (PULUMI_VERSION, KUBERNETES_VERSION, ...): the one copy.
# shellcheck source=mlendpoints/versions.env
. "$(dirname "${BASH_SOURCE[0]}")/../mlendpoints/versions.env"
mkdir -p "$ML_ENDPOINTS_LOGS"

_now() { date +%s; }

say() { printf '==> %s\n' "$*" >&2; }

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: run CMD with its output in a log file; print the time taken, or the
# log tail and the log's path when it fails.
step() {
  local name="$1"; shift
  local log="$ML_ENDPOINTS_LOGS/${name// /_}.log"
  local start; start=$(_now)
  say "$name ..."
  if "$@" >"$log" 2>&1; then
    say "$name: done in $(( $(_now) - start ))s"
  else
    local rc=$?
    printf 'error: step "%s" failed (exit %s) after %ss; last lines of %s:\n' \
      "$name" "$rc" "$(( $(_now) - start ))" "$log" >&2
    tail -n 30 "$log" >&2
    exit "$rc"
  fi
}

# stamp_ok FILE CONTENT: true when FILE exists and holds CONTENT (a finished step's key).
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
