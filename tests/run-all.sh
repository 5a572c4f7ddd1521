#!/usr/bin/env bash
# The one test command (see README.md "Test it"). As root on a fresh Debian machine it:
#   1. installs the Debian packages the suites need (apt-get, non-interactive);
#   2. runs the hermetic tests (`cargo test`), the README's own commands as written
#      (tests/readme/run.sh) and the alert-rule tests (promtool);
#   3. starts a private Postfix + Dovecot on loopback high ports (tests/real/mta.sh) and
#      runs the real-server suite against the release binary: a real Prometheus, promtool,
#      swaks, a network namespace with iptables rules, headless Chromium;
#   4. evaluates every PromQL expression of the Grafana dashboard through a real Prometheus
#      scraping the exporter (tests/dashboard/run.sh), and checks the shipped configuration
#      files (promtool, --config.check);
#   5. builds the container image with podman and scrapes the running container;
#   6. runs cargo-mutants over what the last commit changed in src/ (tests/mutants/run.sh;
#      a surviving mutant not listed in tests/mutants/accepted.txt fails the run);
#   7. stops what it started, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

packages=(postfix dovecot-core libnet-ssleay-perl prometheus swaks openssl curl ca-certificates
    iptables iproute2 chromium python3-yaml podman runc binutils apache2-utils systemd knot knot-dnsutils ldnsutils
    nginx-light unbound dnsmasq-base)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    # Keep the system Postfix unconfigured: the suite runs a private instance.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== cargo test (hermetic; the exporter, testkit and the bench)"
cargo test --workspace --locked

echo "== portability: Linux-only calls only behind cfg(target_os = \"linux\")"
tests/portability/check.sh

echo "== the README's commands, as written"
tests/readme/run.sh

echo "== alert rules (promtool check rules, promtool test rules)"
tests/rules/check.sh

echo "== real-server suite"
trap 'tests/real/mta.sh stop >/dev/null 2>&1 || true' EXIT
tests/real/mta.sh start
cargo test --locked --release --features real-servers --test real

echo "== Grafana dashboard: every panel's PromQL against a real Prometheus"
tests/dashboard/run.sh

echo "== shipped configuration files"
tests/config/check.sh

echo "== container image"
SMTP_EXPORTER_BINARY=target/release/smtp_exporter tests/container/run.sh

echo "== mutation testing: the mutants of the last commit's change (tests/mutants/run.sh)"
# Last: it mutates this tree in place (each file is restored) and reuses the debug build.
MUTANTS_IN_PLACE=1 tests/mutants/run.sh

echo "== all suites passed in $(($(date +%s) - started)) s"
