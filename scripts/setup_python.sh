#!/usr/bin/env bash
# Creates .venv with the project and its pinned dependencies (constraints.txt).
# Skips the install when pyproject.toml and constraints.txt have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PY=${PYTHON:-python3}

# Pulumi starts the dynamic-provider plugin (image builds, generated keys) in the program's
# folder (infra/) and resolves Pulumi.yaml's `virtualenv: .venv` from there, while the
# language host resolves it from the project root: infra/.venv points at the one venv.
ln -sfn ../.venv infra/.venv
key=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if stamp_ok .venv/.ml-endpoints-stamp "$key" && .venv/bin/python -c 'import scoring' 2>/dev/null; then
  say "python env: up to date (.venv)"
  exit 0
fi
install() {
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install --disable-pip-version-check -q --upgrade pip
  .venv/bin/pip install --disable-pip-version-check -c constraints.txt -e '.[dev]'
}
step "python env (.venv, pinned by constraints.txt)" install
echo "$key" > .venv/.ml-endpoints-stamp
