#!/usr/bin/env bash
#
# tests/real/mta.sh - start/stop a real, throw-away Postfix + Dovecot SASL setup, an
# authoritative name server (knot) for the test zones, and nginx for their MTA-STS
# policies, on loopback for
# smtp_exporter's "real server" tests.
#
# Usage (as root, Debian 12 or similar):
#   tests/real/mta.sh start   # install packages if missing, generate PKI, configure, start
#   tests/real/mta.sh env     # print the variables written to $REAL_STATE_DIR/env
#   tests/real/mta.sh stop    # stop exactly what `start` started (safe to run twice)
#   tests/real/mta.sh clean   # stop, then delete the state directory
#
# This file holds the settings (below) and the subcommands; each server's set-up is a file
# of its own in tests/real/mta/ (postfix, dovecot, knot, resolvers, nginx), beside what
# they share (packages, pki, process).
#
# Isolation: everything runs as a PRIVATE instance. The system Postfix (/etc/postfix) and
# the system Dovecot (/etc/dovecot) are neither reconfigured, started nor stopped:
#   * Postfix runs as `postfix -c $STATE/postfix/etc` with its own config_directory,
#     queue_directory, data_directory and log file. As root, Postfix accepts a private
#     config directory without it being listed in alternate_config_directories of the
#     default main.cf, so /etc/postfix/main.cf is not touched.
#   * Dovecot runs as `dovecot -c $STATE/dovecot/dovecot.conf` with its own base_dir and
#     state_dir; it serves SASL authentication to Postfix, LMTP delivery of deliver.test
#     (with a Sieve rule that files +junk and +archive mail) and IMAP on 127.0.0.1.
# The only system-wide effect is package installation. When postfix is not yet installed,
# debconf is preseeded with "No configuration", so the package does not set up or start
# the system instance on port 25.
#
# Everything listens on 127.0.0.1 only, but the relay port also on ::1 (the test zone's
# mx1 has an AAAA there) and on 127.0.0.3 and 127.0.0.4 (the DANE zone's mx2, presenting
# the CA in its chain, and mx3, presenting a self-signed certificate); all mail accepted is
# discarded (no delivery, no outbound SMTP, no DNS lookups by smtpd). knot serves mail.test
# and, DNSSEC-signed, a root of our own, test., dane.test and bogus.test on
# 127.0.0.1:$DNS_PORT (UDP and TCP), run as `knotd -c $STATE/knot/knot.conf` with its own
# rundir and key store; the root's key is the trust anchor in $DNS_TRUST_ANCHORS. See
# write_zone and write_signed_zones for the names. In front of knot, three resolvers of the
# kinds the exporter meets (see start_resolvers): unbound validating ($UNBOUND_PORT),
# unbound with validation off, passing DNSSEC records on ($UNBOUND_PLAIN_PORT), and
# dnsmasq without DNSSEC, serving a copy of the test names ($DNSMASQ_PORT); each logs the
# queries it gets.
#
# Tunables (environment variables, all optional):
#   REAL_STATE_DIR     state directory              (default /tmp/smtp-exporter-real)
#   RELAY_PORT         plain SMTP, STARTTLS offered (default 10025; also on ::1)
#   DNS_PORT           knot, zone mail.test         (default 10053)
#   UNBOUND_PORT       unbound, validating from the root's key, recursing to knot
#                                                   (default 10054)
#   UNBOUND_PLAIN_PORT unbound without validation (module-config "iterator") (default 10055)
#   DNSMASQ_PORT       dnsmasq without DNSSEC, its own copy of the names (default 10056)
#   MTA_STS_PORT       nginx, the zone's MTA-STS policies (default 443, as RFC 8461 says)
#   NOTLS_PORT         plain SMTP, no STARTTLS      (default 10026)
#   IMAP_PORT          Dovecot IMAP, STARTTLS       (default 10143)
#   IMAPS_PORT         Dovecot IMAP, implicit TLS   (default 10993)
#   INBOX_USER         the delivery probes' mailbox (default inbox@deliver.test); Postfix
#                      delivers deliver.test to it over LMTP. Its +junk and +archive
#                      addresses are filed into Junk and Archive by a Sieve rule,
#                      +held is put on hold, +void is discarded
#   INBOX_PASSWORD     its IMAP password            (default inbox-secret)
#   OPENRELAY_PORT     an open relay on purpose: it trusts all of 127.0.0.0/8 as
#                      mynetworks, so loopback clients relay anywhere (default 10028)
#   SUBMISSION_PORT    STARTTLS required + AUTH     (default 10587)
#   SUBMISSIONS_PORT   implicit TLS + AUTH          (default 10465)
#   ALT_PORT           like submission ("2525")     (default 12525)
#   EXPIRED_PORT       implicit TLS, expired cert   (default 10466)
#   WRONGNAME_PORT     implicit TLS, cert for another name (default 10467)
#   SELFSIGNED_PORT    implicit TLS, self-signed CA:TRUE cert (`openssl req -x509`) (default 10468)
#   SELFSIGNED_LEAF_PORT implicit TLS, self-signed CA:FALSE cert          (default 10469)
#   POSTSCREEN_PORT    postscreen with a pregreet test in front of smtpd  (default 10024)
#   POSTSCREEN_GREET_WAIT postscreen_greet_wait                           (default 6s,
#                      Postfix's own default when not under stress)
#   AUTH_USER          SASL user                    (default probe@example.test)
#   AUTH_PASSWORD      SASL password                (default probe-secret)
#   MTA_HOSTNAME       Postfix myhostname / banner  (default mx.example.test)
#   AUTH_FAILURE_DELAY Dovecot auth_failure_delay   (default 0, i.e. a 535 comes at once)
#   AUTH_PENALTY       yes = keep Dovecot's per-IP  (default no; otherwise repeated failed
#                      penalty (2 s, 4 s, ... 15 s)  logins from 127.0.0.1 slow down)
#   START_TIMEOUT      seconds to wait for banners  (default 30)

set -euo pipefail

STATE_DIR=${REAL_STATE_DIR:-/tmp/smtp-exporter-real}
RELAY_PORT=${RELAY_PORT:-10025}
NOTLS_PORT=${NOTLS_PORT:-10026}
OPENRELAY_PORT=${OPENRELAY_PORT:-10028}
IMAP_PORT=${IMAP_PORT:-10143}
IMAPS_PORT=${IMAPS_PORT:-10993}
INBOX_USER=${INBOX_USER:-inbox@deliver.test}
INBOX_PASSWORD=${INBOX_PASSWORD:-inbox-secret}
SUBMISSION_PORT=${SUBMISSION_PORT:-10587}
SUBMISSIONS_PORT=${SUBMISSIONS_PORT:-10465}
ALT_PORT=${ALT_PORT:-12525}
EXPIRED_PORT=${EXPIRED_PORT:-10466}
WRONGNAME_PORT=${WRONGNAME_PORT:-10467}
SELFSIGNED_PORT=${SELFSIGNED_PORT:-10468}
SELFSIGNED_LEAF_PORT=${SELFSIGNED_LEAF_PORT:-10469}
POSTSCREEN_PORT=${POSTSCREEN_PORT:-10024}
POSTSCREEN_GREET_WAIT=${POSTSCREEN_GREET_WAIT:-6s}
DNS_PORT=${DNS_PORT:-10053}
UNBOUND_PORT=${UNBOUND_PORT:-10054}
UNBOUND_PLAIN_PORT=${UNBOUND_PLAIN_PORT:-10055}
DNSMASQ_PORT=${DNSMASQ_PORT:-10056}
MTA_STS_PORT=${MTA_STS_PORT:-443}
AUTH_USER=${AUTH_USER:-probe@example.test}
AUTH_PASSWORD=${AUTH_PASSWORD:-probe-secret}
MTA_HOSTNAME=${MTA_HOSTNAME:-mx.example.test}
AUTH_FAILURE_DELAY=${AUTH_FAILURE_DELAY:-0}
AUTH_PENALTY=${AUTH_PENALTY:-no}
START_TIMEOUT=${START_TIMEOUT:-30}

LISTEN_ADDR=127.0.0.1
SERVER_NAME=localhost

PKI_DIR=$STATE_DIR/pki
LOG_DIR=$STATE_DIR/log
PF_DIR=$STATE_DIR/postfix
PF_CONF=$PF_DIR/etc      # config_directory
PF_QUEUE=$PF_DIR/spool   # queue_directory
PF_DATA=$PF_DIR/lib      # data_directory
DC_DIR=$STATE_DIR/dovecot
DC_CONF=$DC_DIR/dovecot.conf
DC_RUN=$DC_DIR/run       # base_dir
DC_STATE=$DC_DIR/state   # state_dir
PF_LOG=$LOG_DIR/postfix.log
DC_LOG=$LOG_DIR/dovecot.log
ENV_FILE=$STATE_DIR/env
# knot: an authoritative name server for the zone mail.test, on 127.0.0.1:$DNS_PORT.
KNOT_DIR=$STATE_DIR/knot
KNOT_CONF=$KNOT_DIR/knot.conf
KNOT_ZONE=$KNOT_DIR/mail.test.zone
KNOT_SOCKET=$KNOT_DIR/knot.sock
KNOT_PID=$KNOT_DIR/knot.pid
KNOT_LOG=$LOG_DIR/knot.log
KNOT_ANCHOR=$KNOT_DIR/root.anchor
# The resolvers in front of knot (start_resolvers).
UNBOUND_DIR=$STATE_DIR/unbound
UNBOUND_LOG=$LOG_DIR/unbound-validating.log
UNBOUND_PLAIN_LOG=$LOG_DIR/unbound-plain.log
DNSMASQ_DIR=$STATE_DIR/dnsmasq
DNSMASQ_LOG=$LOG_DIR/dnsmasq.log
# nginx: the MTA-STS policies of the test zone, on 127.0.0.1:$MTA_STS_PORT.
NGINX_DIR=$STATE_DIR/nginx
NGINX_CONF=$NGINX_DIR/nginx.conf
PASSWORD_FILE=$STATE_DIR/auth-password
INBOX_PASSWORD_FILE=$STATE_DIR/inbox-password
# The inbox's extension addresses (see INBOX_USER above).
INBOX_LOCAL=${INBOX_USER%@*}
INBOX_DOMAIN=${INBOX_USER#*@}
INBOX_JUNK=$INBOX_LOCAL+junk@$INBOX_DOMAIN
INBOX_ARCHIVE=$INBOX_LOCAL+archive@$INBOX_DOMAIN
INBOX_HELD=$INBOX_LOCAL+held@$INBOX_DOMAIN
INBOX_VOID=$INBOX_LOCAL+void@$INBOX_DOMAIN

# libnet-ssleay-perl: only a Recommends of swaks, but needed for its TLS options.
PACKAGES=(postfix dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sieve swaks libnet-ssleay-perl openssl knot knot-dnsutils ldnsutils nginx-light unbound dnsmasq-base)

log() { printf 'mta.sh: %s\n' "$*" >&2; }
die() { printf 'mta.sh: error: %s\n' "$*" >&2; exit 1; }

# The parts, one file a server, and what they share (packages, PKI, process handling).
for part in packages pki process postfix dovecot knot resolvers nginx; do
    # shellcheck source=/dev/null
    source "$(dirname "${BASH_SOURCE[0]}")/mta/$part.sh"
done

# ---------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------

require_root() {
    ((EUID == 0)) || die "must run as root (installs packages, starts Postfix/Dovecot)"
}

cmd_stop() {
    require_root
    stop_postfix
    stop_dovecot
    stop_resolvers
    stop_knot
    stop_nginx
    rm -f "$ENV_FILE"
}

cmd_start() {
    require_root
    [[ $AUTH_USER != *:* ]] || die "AUTH_USER must not contain ':'"
    local started=$SECONDS

    # Leftovers of a previous run (uses the previous run's config/pid files).
    cmd_stop

    ensure_packages
    check_ports_free

    mkdir -p "$STATE_DIR" "$LOG_DIR"
    chmod 0755 "$STATE_DIR" "$LOG_DIR"
    : >"$PF_LOG"
    : >"$DC_LOG"

    generate_pki
    write_postfix_config
    write_dovecot_config

    # `postfix check` validates the config and creates the queue directories, including
    # private/ where Dovecot puts the auth socket.
    postfix -c "$PF_CONF" check || fail_start "postfix check failed"
    # The Sieve rule is compiled now: Dovecot could not write the binary beside it as the
    # mail user.
    sievec -c "$DC_CONF" "$DC_DIR/sieve/before.sieve" >>"$DC_LOG" 2>&1 || fail_start "sievec failed"

    # The daemons must not inherit our stdout/stderr (a caller capturing the output through
    # a pipe would wait for EOF until they exit) nor the lock on fd 9.
    dovecot -c "$DC_CONF" </dev/null >>"$DC_LOG" 2>&1 9>&- ||
        fail_start "dovecot failed to start"
    postfix -c "$PF_CONF" start </dev/null >>"$PF_LOG" 2>&1 9>&- ||
        fail_start "postfix failed to start"

    write_knot_config
    start_knot
    start_resolvers
    write_nginx_config
    start_nginx

    wait_ready
    write_env_file
    log "ready in $((SECONDS - started))s; variables in $ENV_FILE:"
    grep -v '^#' "$ENV_FILE" >&2
}

cmd_env() {
    [[ -f $ENV_FILE ]] || die "$ENV_FILE not found; run '$0 start' first"
    grep -v '^#' "$ENV_FILE"
}

cmd_clean() {
    cmd_stop
    # Only delete what looks like our own state directory.
    if [[ -d $STATE_DIR/postfix || -d $STATE_DIR/dovecot || -d $STATE_DIR/pki ]]; then
        rm -rf "$STATE_DIR"
    fi
    rm -f "$STATE_DIR.lock"
}

# Serialise concurrent invocations that share a state directory (e.g. parallel test runs).
take_lock() {
    mkdir -p "$(dirname "$STATE_DIR")"
    exec 9>"$STATE_DIR.lock"
    flock -w 120 9 || die "timed out waiting for the lock $STATE_DIR.lock"
}

case ${1:-} in
start | stop | clean) take_lock ;;
esac

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
clean) cmd_clean ;;
*)
    printf 'usage: %s start|stop|env|clean\n' "$0" >&2
    exit 2
    ;;
esac
