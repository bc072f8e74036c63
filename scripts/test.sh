#!/usr/bin/env bash
# The whole suite, as CI runs it (`make test`): prepare the machine, then every test.
#   1. the site daemons, golden image and prebooted templates of the test state folder (idempotent;
#      the image and templates are cached outside the clone, keyed by their recipe);
#   2. the fast tests (pure logic, SQLite and PostgreSQL, HAProxy, the browser), in pytest-xdist
#      workers (COUNTYCLOUD_TEST_WORKERS, default 2), while step 1 runs: they need none of it, and a
#      new golden image and its templates take minutes of mostly one core;
#   3. the real-VM tests (counties cloned, booted, resized, killed mid-job, a site outage), once 1 is done.
# Arguments go to both pytest runs. docs/benchmarks.md ("Suite time") has the phases' times.
set -euo pipefail
cd "$(dirname "$0")/.."
export COUNTYCLOUD_STATE_DIR="${COUNTYCLOUD_STATE_DIR:-/var/lib/countycloud-test}"
export PYTHONDONTWRITEBYTECODE=1
started=$(date +%s)
phase() { echo "test.sh: $1 after $(( $(date +%s) - started )) s"; }

setup_log=$(mktemp)
.venv/bin/countycloud setup >"$setup_log" 2>&1 &
setup_pid=$!
# Interrupted during the fast tests: stop the setup too (it is idempotent; the next run goes on).
trap 'kill -0 "$setup_pid" 2>/dev/null && kill "$setup_pid"; rm -f "$setup_log"' EXIT

fast=0
.venv/bin/python -m pytest -m "not vm" -n "${COUNTYCLOUD_TEST_WORKERS:-2}" --dist loadgroup "$@" || fast=$?
phase "fast tests done (exit $fast)"

ready=0
wait "$setup_pid" || ready=$?
cat "$setup_log"  # its output after the fast tests', not interleaved with them
phase "machine ready (exit $ready)"
((ready == 0)) || exit "$ready"
((fast == 0)) || exit "$fast"

.venv/bin/python -m pytest -m vm --durations=30 "$@"
phase "all tests done"
