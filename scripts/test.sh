#!/usr/bin/env bash
# Installs everything the test suite needs (Debian DNS servers, Prometheus,
# tshark, Chromium, the Python packages) and runs lint, types and tests.
# pytest's exit 5 ("no tests collected") is a failure here, never a pass.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system-deps.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check exporter tests bench
.venv/bin/mypy
set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
