#!/usr/bin/env bash
#
# tests/dashboard/run.sh - prove dashboards/smtp-exporter.json against real data.
#
# Starts, all on 127.0.0.1:
#   * a private Postfix + Dovecot (tests/real/mta.sh, in a state directory and on ports of
#     its own, so it neither disturbs nor depends on the real-server suite's instance),
#   * smtp_exporter probing it with specs chosen so that every panel has data, the failure,
#     certificate-error, expectation and mail-domain panels included (see
#     write_exporter_config; the domain comes from the test zone of mta.sh's knot),
#   * a Prometheus scraping the exporter every second,
# then runs tests/dashboard/check.py until every query of the dashboard returns data (at
# most $WAIT seconds), spot-checks what some panels show (expect_values.py), and finally
# checks that check.py does fail: on a copy of the dashboard with one broken expr, one expr
# without data and one panel without the datasource variable, it must exit non-zero and
# name exactly those.
#
# Usage (as root, like tests/real/mta.sh; Debian with `prometheus` installed):
#   tests/dashboard/run.sh
#
# Environment:
#   SMTP_EXPORTER_BIN   exporter binary        (default target/release/smtp_exporter; built
#                                               with `cargo build --release` when missing)
#   PROMETHEUS_BIN      prometheus binary      (default: prometheus from PATH)
#   WAIT                seconds to wait for all panels to have data (default 120)
#   DASH_REAL_STATE_DIR state directory of the private MTA (default /tmp/smtp-exporter-dashboard-real)
#   DASH_PORT_BASE      the MTA's ports are BASE+25, +26, +465, +587, +2525 (default 20000)
#   KEEP=1              leave everything running at the end (prints how to stop it)
#
# Exit status: 0 when the dashboard passes and the negative check fails as it should.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHECK=$ROOT/tests/dashboard/check.py
DASHBOARD=$ROOT/dashboards/smtp-exporter.json
BIN=${SMTP_EXPORTER_BIN:-$ROOT/target/release/smtp_exporter}
PROMETHEUS=${PROMETHEUS_BIN:-prometheus}
WAIT=${WAIT:-120}
BASE=${DASH_PORT_BASE:-20000}

export REAL_STATE_DIR=${DASH_REAL_STATE_DIR:-/tmp/smtp-exporter-dashboard-real}
export RELAY_PORT=$((BASE + 25)) NOTLS_PORT=$((BASE + 26)) SUBMISSIONS_PORT=$((BASE + 465))
export SUBMISSION_PORT=$((BASE + 587)) ALT_PORT=$((BASE + 2525)) DNS_PORT=$((BASE + 53)) MTA_STS_PORT=$((BASE + 443))
export OPENRELAY_PORT=$((BASE + 28)) IMAP_PORT=$((BASE + 143)) IMAPS_PORT=$((BASE + 993))

export PYTHONDONTWRITEBYTECODE=1

log() { printf 'dashboard/run.sh: %s\n' "$*" >&2; }
die() { printf 'dashboard/run.sh: error: %s\n' "$*" >&2; exit 2; }

WORK=$(mktemp -d /tmp/smtp-exporter-dashboard.XXXXXX)
EXPORTER_PID=
PROMETHEUS_PID=
MTA_STARTED=0

cleanup() {
    local rc=$?
    if [[ ${KEEP:-0} == 1 ]]; then
        log "KEEP=1: left running - exporter pid ${EXPORTER_PID:-none}, prometheus pid ${PROMETHEUS_PID:-none};"
        log "  stop with: kill ${EXPORTER_PID} ${PROMETHEUS_PID}; REAL_STATE_DIR=$REAL_STATE_DIR $ROOT/tests/real/mta.sh stop; rm -rf $WORK"
        exit "$rc"
    fi
    for pid in $PROMETHEUS_PID $EXPORTER_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    if ((MTA_STARTED)); then
        "$ROOT/tests/real/mta.sh" stop >/dev/null 2>&1 || log "warning: mta.sh stop failed"
    fi
    if ((rc != 0)); then
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # $1 = url, $2 = seconds, $3 = pid that must stay alive, $4 = name
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        kill -0 "$3" 2>/dev/null || die "$4 exited; see $WORK/$4.log"
        ((SECONDS < deadline)) || die "$4 not ready at $1 after $2 s; see $WORK/$4.log"
        sleep 0.2
    done
}

# ------------------------------------------------------------------ prerequisites
command -v python3 >/dev/null || die "python3 is needed"
command -v curl >/dev/null || die "curl is needed"
command -v "$PROMETHEUS" >/dev/null || die "prometheus not found (apt-get install prometheus, or set PROMETHEUS_BIN)"
if [[ ! -x $BIN ]]; then
    log "building the exporter (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi

# ------------------------------------------------------------------ private MTA
log "starting a private Postfix + Dovecot in $REAL_STATE_DIR (ports $RELAY_PORT, $NOTLS_PORT, $SUBMISSIONS_PORT, $SUBMISSION_PORT, $ALT_PORT)"
MTA_STARTED=1
"$ROOT/tests/real/mta.sh" start >"$WORK/mta.log" 2>&1 || { cat "$WORK/mta.log" >&2; die "mta.sh start failed"; }
# shellcheck disable=SC1091
. "$REAL_STATE_DIR/env"

# ------------------------------------------------------------------ exporter
CLOSED_PORT=$(free_port)     # nothing listens there: connect is refused
EXPORTER_PORT=$(free_port)
PROMETHEUS_PORT=$(free_port)

# Every spec is here for a panel:
#   mx             relay (STARTTLS, verified), submission on the submission port and on the
#                  "2525" port (STARTTLS required + AUTH), submissions (implicit TLS + AUTH);
#                  its expect block holds -> Expectations shows 0s; a delivery probe through
#                  the submission port into Dovecot's INBOX -> the delivery row
#   mx-wrong-ca    relay trusting an unrelated CA, on_invalid_cert: report -> certificate not
#                  verified (unknown_issuer) without failing; its banner expectation fails
#   mx-bad-password submissions with a wrong password -> auth_failed, AUTH reply 535
#   mx-notls       starttls_required against the port without STARTTLS -> starttls_unavailable,
#                  failed starttls expectation
#   closed         a port nothing listens on -> port state refused
write_exporter_config() {
    cat >"$WORK/exporter.yml" <<EOF
interval: 15s
max_concurrency: 16
modules:
  relay:
    tls: starttls
    timeout: 10s
    tls_config: { ca_file: "$CA_FILE", server_name: "$SERVER_NAME" }
  relay_wrong_ca:
    tls: starttls
    timeout: 10s
    tls_config: { ca_file: "$WRONG_CA_FILE", server_name: "$SERVER_NAME", on_invalid_cert: report }
  submission:
    tls: starttls_required
    timeout: 10s
    tls_config: { ca_file: "$CA_FILE", server_name: "$SERVER_NAME" }
    auth: { username: "$AUTH_USER", password_file: "$AUTH_PASSWORD_FILE" }
  submissions:
    tls: implicit
    timeout: 10s
    tls_config: { ca_file: "$CA_FILE", server_name: "$SERVER_NAME" }
    auth: { username: "$AUTH_USER", password_file: "$AUTH_PASSWORD_FILE" }
  submissions_bad_password:
    tls: implicit
    timeout: 10s
    tls_config: { ca_file: "$CA_FILE", server_name: "$SERVER_NAME" }
    auth: { username: "$AUTH_USER", password: definitely-not-the-password }
  submission_no_starttls:
    tls: starttls_required
    timeout: 10s
    tls_config: { ca_file: "$CA_FILE", server_name: "$SERVER_NAME" }
  delivery:
    tls: starttls_required
    timeout: 10s
    tls_config: { ca_file: "$CA_FILE", server_name: "$SERVER_NAME" }
    auth: { username: "$AUTH_USER", password_file: "$AUTH_PASSWORD_FILE" }
    delivery:
      mail_from: monitor@example.test
      rcpt_to: "$INBOX_USER"
      interval: 15s
      sweep_after: 10s
      imap:
        host: "$SERVER_NAME"
        port: $IMAPS_PORT
        tls: implicit
        tls_config: { ca_file: "$CA_FILE" }
        username: "$INBOX_USER"
        password_file: "$INBOX_PASSWORD_FILE"
targets:
  - name: mx
    host: $MTA_HOST
    expect: { banner_hostname: "$BANNER_HOSTNAME", starttls: true, cert_names: ["$SERVER_NAME"] }
    ports:
      - { port: $RELAY_PORT, module: relay }
      - { port: $SUBMISSION_PORT, module: submission }
      - { port: $SUBMISSIONS_PORT, module: submissions }
      - { port: $ALT_PORT, module: submission }
      - { port: $SUBMISSION_PORT, module: delivery }
  - name: mx-wrong-ca
    host: $MTA_HOST
    expect: { banner_hostname: mx1.example.com }
    ports:
      - { port: $RELAY_PORT, module: relay_wrong_ca }
  - name: mx-bad-password
    host: $MTA_HOST
    ports:
      - { port: $SUBMISSIONS_PORT, module: submissions_bad_password }
  - name: mx-notls
    host: $MTA_HOST
    expect: { starttls: true }
    ports:
      - { port: $NOTLS_PORT, module: submission_no_starttls }
  - name: closed
    host: 127.0.0.1
    ports:
      - { port: $CLOSED_PORT, module: relay }
# The test zones of mta.sh's knot: two.mail.test (unsigned) has two MX, mx1 on both
# families, mx2 with nothing listening; dane.test (signed, under our own root whose key is
# the trust anchor) has four MX whose TLSA records match but for mx4's.
dns:
  nameservers: ["127.0.0.1:$DNS_PORT"]
  trust_anchors: "$DNS_TRUST_ANCHORS"
domains:
  - name: two.mail.test
    ports:
      - { port: $RELAY_PORT, module: relay }
    policy: { interval: 10s, https_port: $MTA_STS_PORT }
  - name: dane.test
    ports:
      - { port: $RELAY_PORT, module: relay }
    policy: { interval: 10s, https_port: $MTA_STS_PORT }
EOF
}
write_exporter_config
"$BIN" --config.check --config.file="$WORK/exporter.yml" >/dev/null
"$BIN" --config.file="$WORK/exporter.yml" --web.listen-address="127.0.0.1:$EXPORTER_PORT" \
    </dev/null >"$WORK/exporter.log" 2>&1 &
EXPORTER_PID=$!
wait_http "http://127.0.0.1:$EXPORTER_PORT/-/ready" 30 "$EXPORTER_PID" exporter
log "exporter ready on 127.0.0.1:$EXPORTER_PORT (pid $EXPORTER_PID)"

# ------------------------------------------------------------------ prometheus
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: smtp_exporter
    static_configs:
      - targets: ["127.0.0.1:$EXPORTER_PORT"]
EOF
mkdir -p "$WORK/tsdb"
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" </dev/null >"$WORK/prometheus.log" 2>&1 &
PROMETHEUS_PID=$!
wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 60 "$PROMETHEUS_PID" prometheus
PROM_READY=$SECONDS
log "prometheus ready on 127.0.0.1:$PROMETHEUS_PORT (pid $PROMETHEUS_PID)"

# ------------------------------------------------------------------ the check
log "checking $DASHBOARD (waiting up to ${WAIT}s for every query to have data)"
rc=0
python3 "$CHECK" --prometheus "http://127.0.0.1:$PROMETHEUS_PORT" --dashboard "$DASHBOARD" \
    --wait "$WAIT" --show-expr | tee "$WORK/check.out" || rc=$?
log "check finished $((SECONDS - PROM_READY)) s after Prometheus became ready"
if ((rc != 0)); then
    log "FAILED: the dashboard check failed (exit $rc)"
    exit 1
fi

# ------------------------------------------------------------------ what some panels show
log "spot checks of panel values (tests/dashboard/expect_values.py)"
if ! python3 "$ROOT/tests/dashboard/expect_values.py" --prometheus "http://127.0.0.1:$PROMETHEUS_PORT" \
    --dashboard "$DASHBOARD" | sed 's/^/  values: /' >&2; then
    exit 1
fi

# ------------------------------------------------------------------ the check must be able to fail
python3 - "$DASHBOARD" "$WORK/broken.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def walk(ps):
    for p in ps:
        yield p
        yield from walk(p.get("panels") or [])
panels = [p for p in walk(d["panels"]) if p.get("type") != "row"]
panels[0]["targets"][0]["expr"] = "sum by (target (smtp_probe_success)"     # parse error
panels[1]["targets"][0]["expr"] = "smtp_no_such_metric_for_the_check"       # no data
panels[2]["datasource"] = {"type": "prometheus", "uid": "some-fixed-uid"}  # not the variable
json.dump(d, open(sys.argv[2], "w"))
EOF
neg_rc=0
python3 "$CHECK" --prometheus "http://127.0.0.1:$PROMETHEUS_PORT" --dashboard "$WORK/broken.json" \
    >"$WORK/broken.out" 2>&1 || neg_rc=$?
# Shown indented and without its summary line, so that no "N passed, M failed" line of
# the deliberately broken copy can be mistaken for the outcome of the run.
grep -E 'FAILED' "$WORK/broken.out" | sed 's/^/  (expected) /' >&2
summary=$(tail -n 1 "$WORK/broken.out")
if ((neg_rc == 1)) && [[ $summary =~ ^[0-9]+\ passed,\ 3\ failed$ ]] &&
    grep -q 'bad_data' "$WORK/broken.out" && grep -q 'no data' "$WORK/broken.out" &&
    grep -q 'some-fixed-uid' "$WORK/broken.out"; then
    log "negative check: the broken copy fails as it should (${summary//passed,/ok,})"
else
    log "FAILED: the broken copy did not fail as expected (exit $neg_rc, '$summary')"
    exit 1
fi
log "OK"
