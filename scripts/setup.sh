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

# Debian's chromium for the browser test of the Prefect UI (tests/test_browser.py): installed
# only when missing and when this runs as root with apt-get; elsewhere that test skips, except
# under CI (CI set), where it fails, so CI must run this set-up as root.
if ! command -v chromium >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "setup: installing chromium (apt-get) for the browser test"
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
    || echo "setup: chromium could not be installed; tests/test_browser.py will skip"
fi
if [[ -n "${CI:-}" ]] && ! command -v chromium >/dev/null 2>&1; then
  echo "setup: CI needs chromium for tests/test_browser.py: run this set-up as root (apt-get)" >&2
  exit 1
fi

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
