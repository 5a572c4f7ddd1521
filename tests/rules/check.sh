#!/usr/bin/env bash
# Checks the Prometheus alerting rules shipped in config/:
#   1. `promtool check rules`  - the rule file parses, expressions and templates are valid;
#   2. `promtool test rules`   - the unit tests in config/alerts.test.yml pass.
# Both checks always run; the last line is "N passed, M failed", and the exit status is
# non-zero when any check failed. Needs promtool (Debian package `prometheus`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found; install it with: apt-get install prometheus" >&2
  echo "0 passed, 2 failed"
  exit 1
fi

passed=0
failed=0

run_check() {
  local name=$1
  shift
  echo "== $name: $*"
  if "$@"; then
    echo "-- ok: $name"
    passed=$((passed + 1))
  else
    echo "-- FAILED: $name"
    failed=$((failed + 1))
  fi
}

run_check "check rules" promtool check rules config/alerts.yml
run_check "test rules" promtool test rules config/alerts.test.yml

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
