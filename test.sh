#!/usr/bin/env bash
# Cairn's whole test suite, from a fresh Debian machine (run as root):
#   system packages, a virtual environment with the project and its test extras,
#   then lint (ruff), layering (import-linter), types (mypy on core/) and pytest.
# Extra arguments go to pytest, e.g. ./test.sh -m soak   or   ./test.sh tests/core
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv postgresql curl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get -y -qq install "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
VENV=${CAIRN_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.cairn-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== installing cairn with test extras"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[test,dev]"
  touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"

echo "== ruff"
ruff check .
echo "== import-linter"
lint-imports
echo "== mypy core/"
mypy core
echo "== pytest"
if (($#)); then
  exec pytest "$@"
fi
exec pytest -m "not soak"
