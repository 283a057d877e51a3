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

# step [--expect SECONDS] NAME CMD...: run CMD with its output in a log file; print the time
# taken, or the log tail and the log's path when it fails. While CMD runs, a line every
# $ML_ENDPOINTS_PROGRESS_EVERY seconds (default 30) says it is alive: elapsed time against the
# expected duration, how many lines the log has (`go build -v` prints one per package compiled)
# and its last line, so a long Go build or debootstrap is never silent for minutes.
step() {
  local expect=""
  if [ "$1" = --expect ]; then expect=$2; shift 2; fi
  local name="$1"; shift
  local log="$ML_ENDPOINTS_LOGS/${name// /_}.log"
  local start; start=$(_now)
  say "$name ...${expect:+ (expected ~$(_dur "$expect"))}"
  : >"$log"
  _progress "$name" "$log" "$start" "$expect" &
  local ticker=$!
  if "$@" >"$log" 2>&1; then
    kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
    say "$name: done in $(( $(_now) - start ))s"
  else
    local rc=$?
    kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
    printf 'error: step "%s" failed (exit %s) after %ss; last lines of %s:\n' \
      "$name" "$rc" "$(( $(_now) - start ))" "$log" >&2
    tail -n 30 "$log" >&2
    exit "$rc"
  fi
}

# _dur SECONDS: "95s" / "4m05s".
_dur() { if [ "$1" -ge 60 ]; then printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); else printf '%ds' "$1"; fi; }

# _progress NAME LOG START EXPECT: the alive lines of `step` (runs in the background).
_progress() {
  local name=$1 log=$2 start=$3 expect=$4 every=${ML_ENDPOINTS_PROGRESS_EVERY:-30} lines last
  while sleep "$every"; do
    kill -0 $$ 2>/dev/null || return 0  # the script was killed: do not outlive it
    lines=$(wc -l <"$log" 2>/dev/null || echo 0)
    last=$(tail -n 1 "$log" 2>/dev/null | tr -d '\r' | cut -c1-90)
    printf '    %s: %s%s, log %s lines%s\n' "$name" "$(_dur $(( $(_now) - start )))" \
      "${expect:+ of ~$(_dur "$expect")}" "$lines" "${last:+: $last}" >&2
  done
}

# stamp_ok FILE CONTENT: true when FILE exists and holds CONTENT (a finished step's key).
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
