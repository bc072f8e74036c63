#!/usr/bin/env bash
# The whole suite, as CI runs it (`make test`): unit tests first, then the real-VM integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export COUNTYCLOUD_STATE_DIR="${COUNTYCLOUD_STATE_DIR:-/var/lib/countycloud-test}"
exec .venv/bin/python -m pytest "$@"
