#!/usr/bin/env bash
# Sets up a virtualenv with dnsgap and runs the embedded demo: reference DNS
# and DSO servers on loopback, probed on a schedule, metrics on /metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e .
exec .venv/bin/dnsgap demo "$@"
