#!/usr/bin/env bash
# The whole suite, as CI runs it (`make test`): prepare the machine, then every test.
#   1. the site daemons, golden image and prebooted templates of the test state folder (idempotent;
#      the image and templates are cached outside the clone, keyed by their recipe);
#   2. the fast tests (pure logic, SQLite and PostgreSQL, HAProxy, the browser);
#   3. the real-VM tests (counties cloned, booted, resized, killed mid-job, a site outage).
set -euo pipefail
cd "$(dirname "$0")/.."
export COUNTYCLOUD_STATE_DIR="${COUNTYCLOUD_STATE_DIR:-/var/lib/countycloud-test}"
export PYTHONDONTWRITEBYTECODE=1
started=$(date +%s)
.venv/bin/countycloud setup
echo "test.sh: machine ready after $(( $(date +%s) - started )) s"
.venv/bin/python -m pytest -m "not vm" "$@"
echo "test.sh: fast tests done after $(( $(date +%s) - started )) s"
.venv/bin/python -m pytest -m vm "$@"
echo "test.sh: all tests done after $(( $(date +%s) - started )) s"
