#!/usr/bin/env bash
# Builds a wheelhouse on the host for an image's Python environment, so `docker build` can
# install with `pip install --no-index --find-links` under `--network none` (pip inside a
# build cannot verify PyPI's certificates here, and offline builds are reproducible anyway).
#
# The set: the project's own wheel (the scoring server: `python -m scoring serve`), its runtime
# dependencies with its `s3` extra (boto3: an environment image installs it only when one of its
# deployments ships collected data to S3, build arg SERVER_EXTRAS=s3, but the wheels must be at
# hand offline either way), and the given requirement files (default: the sample's
# samples/diabetes/requirements.txt). Versions follow constraints.txt, except for packages a
# requirement file names itself. The images run Debian's Python 3.11 (or python:3.11-slim), so
# the wheels are cp311 / manylinux x86_64 ones.
#
# Output: the wheelhouse folder, $ML_ENDPOINTS_CACHE/wheelhouse/<key>, on stdout's last line.
# Cached by the key (requirements, constraints, the project's sources): a re-run is instant.
#
# Usage: scripts/wheelhouse.sh [-r REQUIREMENTS_FILE]...
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh

PY=${ML_ENDPOINTS_PYTHON:-$ROOT/.venv/bin/python}
IMAGE_PYTHON=3.11
reqs=()
while [ $# -gt 0 ]; do
  case $1 in
    -r) [ $# -ge 2 ] || die "wheelhouse: -r needs a file"; reqs+=("$(realpath "$2")"); shift 2 ;;
    *) die "wheelhouse: unknown argument '$1' (usage: $0 [-r REQUIREMENTS_FILE]...)" ;;
  esac
done
[ ${#reqs[@]} -gt 0 ] || reqs=("$ROOT/samples/diabetes/requirements.txt")
for r in "${reqs[@]}"; do [ -f "$r" ] || die "wheelhouse: requirements file '$r' does not exist"; done
[ -x "$PY" ] || die "wheelhouse: $PY missing; run 'make python' first"

# The project wheel's inputs that run in an image: the `scoring` package and its pins
# (`components` is in the wheel too but only runs on the workstation, so editing it does not
# invalidate wheelhouses). The same hash as the image content keys: components/_hashing.py.
project_hash=$("$PY" components/_hashing.py project-sources "$ROOT")
key=$( { echo "v3 py$IMAGE_PYTHON"; cat constraints.txt; echo "$project_hash"; cat "${reqs[@]}"; } | sha256sum | cut -c1-16)
OUT=$ML_ENDPOINTS_CACHE/wheelhouse/$key

if stamp_ok "$OUT/.stamp" "$key"; then
  say "wheelhouse: up to date ($OUT, $(find "$OUT" -name '*.whl' | wc -l) wheels)"
  echo "$OUT"
  exit 0
fi

# `step` runs build inside `if`, where bash ignores `set -e`: each command checks for itself.
build() {
  _build || { rm -rf "$OUT.tmp.$$" "$OUT.constraints.$$"; return 1; }
}

_build() {
  local tmp=$OUT.tmp.$$ cons=$OUT.constraints.$$
  rm -rf "$tmp" && mkdir -p "$tmp" || return 1
  # Constraints minus the packages the requirement files name themselves (their pins win).
  # shellcheck disable=SC2016
  "$PY" - "$cons" constraints.txt "${reqs[@]}" <<'PYEOF' || return 1
import re, sys
out, cons, *reqs = sys.argv[1:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
named = set()
for path in reqs:
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if m and not line.startswith("-"):
            named.add(norm(m.group(1)))
with open(out, "w") as f:
    for line in open(cons):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line.strip())
        if m and norm(m.group(1)) not in named:
            f.write(line)
PYEOF
  echo "project wheel"
  "$PY" -m pip wheel --disable-pip-version-check -q --no-deps -w "$tmp" "$ROOT" || return 1
  local proj req_args=()
  proj=$(ls "$tmp"/ml_endpoints-*.whl) || return 1
  for r in "${reqs[@]}"; do req_args+=(-r "$r"); done
  local host_py
  host_py=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "dependencies (host python $host_py, image python $IMAGE_PYTHON)"
  if [ "$host_py" = "$IMAGE_PYTHON" ] && [ "$(uname -m)" = x86_64 ]; then
    # Same interpreter ABI as the image: `pip wheel` also turns any sdist into a wheel.
    "$PY" -m pip wheel --disable-pip-version-check --progress-bar off -w "$tmp" -c "$cons" "${proj}[s3]" "${req_args[@]}" || return 1
  else
    "$PY" -m pip download --disable-pip-version-check --progress-bar off -d "$tmp" -c "$cons" \
      --only-binary=:all: --implementation cp --python-version "$IMAGE_PYTHON" \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
      "${proj}[s3]" "${req_args[@]}" || return 1
  fi
  rm -f "$cons"
  echo "$key" > "$tmp/.stamp" || return 1
  # Image builds may run this concurrently for the same key: the first finished copy wins.
  if ! mv -T "$tmp" "$OUT" 2>/dev/null; then
    if stamp_ok "$OUT/.stamp" "$key"; then rm -rf "$tmp"; else rm -rf "$OUT" && mv -T "$tmp" "$OUT" || return 1; fi
  fi
  ls "$OUT"
  # Keep the 6 most recent wheelhouses (each is tens of MB); older keys are from older sources.
  find "$(dirname "$OUT")" -mindepth 1 -maxdepth 1 -type d -not -name '*.tmp.*' -printf '%T@ %p\n' \
    | sort -rn | tail -n +7 | cut -d' ' -f2- | xargs -r rm -rf
}

mkdir -p "$(dirname "$OUT")"
step "wheelhouse" build
say "wheelhouse: $OUT ($(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1))"
echo "$OUT"
