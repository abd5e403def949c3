#!/usr/bin/env bash
# Cairn's whole test suite, from a fresh Debian machine (run as root):
#   system packages, a virtual environment with the project and its test extras,
#   then lint (ruff), layering (import-linter), types (mypy on core/) and pytest.
# Extra arguments go to pytest instead of the default selection, e.g.
#   ./test.sh tests/core        ./test.sh -m soak        ./test.sh -m "not fuse"
set -euo pipefail
cd "$(dirname "$0")"
. packaging/dev-env.sh

cairn_system_packages fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv postgresql curl
cairn_venv "test,dev"

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
exec pytest -m "not soak" --durations=15
