#!/usr/bin/env bash
# Create or update .venv with the locked dependency set; a second call with nothing changed
# returns in seconds (the stamp is keyed on the hash of the lock file and pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.signmae-setup-stamp"
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/signmae" ]]; then
  exit 0
fi

echo "setup: installing the locked dependency set into $VENV (first run takes minutes)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$VENV/bin/python" -m pip install --quiet -r requirements.lock
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
echo "$want" >"$STAMP"
echo "setup: done"
