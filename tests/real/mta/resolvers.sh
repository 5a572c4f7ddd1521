# tests/real/mta/resolvers.sh - the resolvers in front of knot (issue 25): unbound validating, unbound passing DNSSEC through, dnsmasq.
# Sourced by tests/real/mta.sh, whose header defines the variables used here.
# shellcheck shell=bash

# The zones knot serves, each a stub zone of the unbound instances: their delegations name
# ns.test (127.0.0.1, port 53), so every zone is pointed at knot's port directly.
KNOT_ZONES=(. test. mail.test. dane.test. bogus.test. expired.test. edge.test.)

# An unbound config: $1 = name, $2 = port, $3 = module-config. Every query it gets and
# every reply's code are logged (log-queries, log-replies), for the tests that prove which
# queries the exporter makes (no TLSA with dns.dnssec: off; the CD query after a SERVFAIL).
write_unbound_config() {
    local name=$1 port=$2 modules=$3 zone
    {
        cat <<EOF
server:
    interface: 127.0.0.1
    port: $port
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    do-daemonize: yes
    username: ""
    chroot: ""
    directory: "$UNBOUND_DIR"
    pidfile: "$UNBOUND_DIR/$name.pid"
    logfile: "$LOG_DIR/unbound-$name.log"
    use-syslog: no
    log-time-ascii: yes
    verbosity: 1
    log-queries: yes
    log-replies: yes
    log-servfail: yes
    val-log-level: 2
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    local-zone: "test." nodefault
    module-config: "$modules"
    trust-anchor-signaling: no
    root-key-sentinel: no
    qname-minimisation: no
    cache-max-ttl: 5
    cache-max-negative-ttl: 5
    val-bogus-ttl: 5
    edns-buffer-size: 1232
EOF
        [[ $modules == *validator* ]] && printf '    trust-anchor-file: "%s"\n' "$KNOT_ANCHOR"
        printf 'remote-control:\n    control-enable: no\n'
        for zone in "${KNOT_ZONES[@]}"; do
            printf 'stub-zone:\n    name: "%s"\n    stub-addr: 127.0.0.1@%s\n' "$zone" "$DNS_PORT"
        done
    } >"$UNBOUND_DIR/$name.conf"
    unbound-checkconf "$UNBOUND_DIR/$name.conf" >/dev/null || fail_start "unbound-checkconf $UNBOUND_DIR/$name.conf failed"
}

stop_resolvers() {
    local name pid
    for name in validating plain; do
        pid=$(live_pid "$UNBOUND_DIR/$name.pid" unbound) || continue
        stop_session "unbound ($name)" "$pid" kill -TERM "$pid"
    done
    pid=$(live_pid "$DNSMASQ_DIR/dnsmasq.pid" dnsmasq) || return 0
    stop_session dnsmasq "$pid" kill -TERM "$pid"
}

# True once the resolver on 127.0.0.1:$1 answers $2 of type $3 with a line matching $4.
resolver_answers() {
    kdig -p "$1" @127.0.0.1 +timeout=1 +retry=0 +dnssec "$2" "$3" 2>/dev/null | grep -q "$4"
}

# Three resolvers in front of knot, on loopback:
#   unbound, validating ($UNBOUND_PORT): recursion through stub zones to knot, the root's
#     key as trust anchor. Sets AD on secure answers, answers SERVFAIL for bogus.test and
#     expired.test, and gives their data to a query with CD set.
#   unbound, validation off ($UNBOUND_PLAIN_PORT): module-config "iterator"; passes the
#     RRSIGs, DNSKEYs and NSECs on untouched when asked with DO, never sets AD.
#   dnsmasq ($DNSMASQ_PORT): a resolver without DNSSEC, as home routers and many
#     forwarders are: it serves a copy of the names the tests ask (dnsmasq_data) from its
#     own data, without a single RRSIG, NSEC or AD bit, and the root's DNSKEY (a copy of
#     knot's) unsigned, as a forwarder that strips signatures gives it. Local data rather
#     than forwarding to knot: dnsmasq 2.90 without --dnssec forwards a query with the DO
#     bit as it is and passes knot's RRSIGs on (seen with kdig +dnssec), which would make
#     it one more DNSSEC-transparent resolver like the plain unbound above.
start_resolvers() {
    rm -rf "$UNBOUND_DIR" "$DNSMASQ_DIR"
    mkdir -p "$UNBOUND_DIR" "$DNSMASQ_DIR"
    : >"$UNBOUND_LOG"
    : >"$UNBOUND_PLAIN_LOG"
    : >"$DNSMASQ_LOG"
    write_unbound_config validating "$UNBOUND_PORT" "validator iterator"
    write_unbound_config plain "$UNBOUND_PLAIN_PORT" "iterator"
    local name
    for name in validating plain; do
        unbound -c "$UNBOUND_DIR/$name.conf" </dev/null >>"$LOG_DIR/unbound-$name.log" 2>&1 9>&- ||
            fail_start "unbound ($name) failed to start (see $LOG_DIR/unbound-$name.log)"
    done
    local data
    mapfile -t data < <(dnsmasq_data)
    dnsmasq --conf-file=/dev/null --port="$DNSMASQ_PORT" --listen-address=127.0.0.1 --bind-interfaces \
        --no-resolv --no-hosts --no-poll --user=root --group=root --pid-file="$DNSMASQ_DIR/dnsmasq.pid" \
        --local=/test/ --local-ttl=2 "${data[@]}" --log-queries --log-facility="$DNSMASQ_LOG" \
        </dev/null >>"$DNSMASQ_LOG" 2>&1 9>&- || fail_start "dnsmasq failed to start (see $DNSMASQ_LOG)"
    local i ready=0
    for i in $(seq 50); do
        if resolver_answers "$UNBOUND_PORT" mx1.dane.test A 'Flags:[^;]* ad[ ;]' &&
            resolver_answers "$UNBOUND_PLAIN_PORT" mx1.dane.test A 'RRSIG' &&
            resolver_answers "$DNSMASQ_PORT" mx1.dane.test A '127\.0\.0\.1'; then
            ready=1
            break
        fi
        sleep 0.2
    done
    ((ready)) || fail_start "the resolvers in front of knot do not answer (logs: $UNBOUND_LOG, $UNBOUND_PLAIN_LOG, $DNSMASQ_LOG)"
    # What the tests stand on: the validating unbound refuses bogus.test, and dnsmasq
    # strips DNSSEC records.
    resolver_answers "$UNBOUND_PORT" bogus.test MX 'status: SERVFAIL' ||
        fail_start "the validating unbound does not answer SERVFAIL for bogus.test"
    resolver_answers "$DNSMASQ_PORT" . DNSKEY 'DNSKEY[[:space:]]*257' ||
        fail_start "dnsmasq does not serve the root's DNSKEY"
    if resolver_answers "$DNSMASQ_PORT" dane.test MX RRSIG; then
        fail_start "dnsmasq gives RRSIGs; it no longer stands for a resolver without DNSSEC"
    fi
}

# dnsmasq's options for its copy of the test names (one a line), with the same addresses
# and TLSA records as knot's zones: dane.test (mx1..mx4, mx4's record stale), bogus.test,
# unsigned.mail.test; every other name under test. does not exist (--local=/test/).
dnsmasq_data() {
    local tlsa=_$RELAY_PORT._tcp flags proto alg key
    tlsa_rr() { printf -- '--dns-rr=%s,52,%02x%02x%02x%s\n' "$1" "$2" "$3" "$4" "$5"; }
    # The root's key, as knot's anchor file has it: flags, protocol, algorithm, key.
    read -r _ _ _ _ flags proto alg key <"$KNOT_ANCHOR"
    printf -- '--dns-rr=.,48,%04x%02x%02x%s\n' "$flags" "$proto" "$alg" "$(printf '%s' "$key" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
    printf -- '--mx-host=dane.test,mx%d.dane.test,%d\n' 1 10 2 20 3 30 4 40
    printf -- '--host-record=%s\n' mx1.dane.test,127.0.0.1 mx2.dane.test,127.0.0.3 mx3.dane.test,127.0.0.4 mx4.dane.test,127.0.0.1
    tlsa_rr "$tlsa.mx1.dane.test" 3 1 1 "$(spki_sha256 "$PKI_DIR/server.pem")"
    tlsa_rr "$tlsa.mx2.dane.test" 2 0 1 "$(cert_sha256 "$PKI_DIR/ca.pem")"
    tlsa_rr "$tlsa.mx3.dane.test" 3 1 1 "$(spki_sha256 "$PKI_DIR/selfsigned-leaf.pem")"
    tlsa_rr "$tlsa.mx4.dane.test" 3 1 1 "$(spki_sha256 "$PKI_DIR/wrong-ca.pem")"
    printf -- '--mx-host=bogus.test,mx.bogus.test,10\n--host-record=mx.bogus.test,127.0.0.1\n'
    tlsa_rr "$tlsa.mx.bogus.test" 3 1 1 "$(spki_sha256 "$PKI_DIR/server.pem")"
    printf -- '--mx-host=unsigned.mail.test,mx1.mail.test,10\n--host-record=mx1.mail.test,127.0.0.1\n'
    tlsa_rr "$tlsa.mx1.mail.test" 3 1 1 "$(spki_sha256 "$PKI_DIR/server.pem")"
}
