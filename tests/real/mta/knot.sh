# tests/real/mta/knot.sh - knot, the authoritative name server: the test zones (mail.test, the signed DANE zones, edge.test) and its config.
# Sourced by tests/real/mta.sh, whose header defines the variables used here.
# shellcheck shell=bash

# The test zone mail.test, written with serial $1 (tests rewrite it and reload knot):
#   two       two MX at different preferences; mx1 has both families (Postfix listens on
#             127.0.0.1 and ::1), mx2 is a CNAME to an address where nothing listens
#   implicit  no MX: its own address is its implicit MX
#   null      a null MX (RFC 7505)
#   noaddr    an MX host with no address
#   unsigned  one MX, mx1: the unsigned domain of the resolver matrix (resolvers.rs)
#   two also has an MTA-STS policy (enforce: mx1, mx2) and a TLS-RPT record; sts-missing
#   (enforce, mx1 missing), sts-testing (testing; a TLS-RPT record with an ftp: rua),
#   sts-404, sts-redirect, sts-big (70 KB), sts-ctype (text/html) are the broken cases,
#   served by nginx (write_nginx_config)
#   (any other name under mail.test does not exist)
write_zone() { # $1 = serial
    cat >"$KNOT_ZONE" <<EOF
\$ORIGIN mail.test.
\$TTL 2
@         SOA  ns hostmaster $1 60 60 600 1
@         NS   ns
ns        A    127.0.0.1
two       MX   10 mx1
two       MX   20 mx2
mx1       A    127.0.0.1
mx1       AAAA ::1
mx2       CNAME mx2-real
mx2-real  A    127.0.0.2
implicit  A    127.0.0.1
null      MX   0 .
envelope  MX   10 mx1
unsigned  MX   10 mx1
noaddr    MX   10 empty
empty     TXT  "no address here"
_mta-sts.two     TXT "v=STSv1; id=1"
mta-sts.two      A   127.0.0.1
_smtp._tls.two   TXT "v=TLSRPTv1; rua=mailto:tls-reports@mail.test"
EOF
    local case
    for case in sts-missing sts-testing sts-404 sts-redirect sts-big sts-ctype; do
        printf '%s MX 10 mx1\n_mta-sts.%s TXT "v=STSv1; id=1"\nmta-sts.%s A 127.0.0.1\n' "$case" "$case" "$case" >>"$KNOT_ZONE"
    done
    printf '_smtp._tls.sts-testing TXT "v=TLSRPTv1; rua=ftp://reports.mail.test"\n' >>"$KNOT_ZONE"
    # A TLSA record in this unsigned zone: DANE does not apply to it.
    printf '_%s._tcp.mx1 TLSA 3 1 1 %s\n' "$RELAY_PORT" "$(spki_sha256 "$PKI_DIR/server.pem")" >>"$KNOT_ZONE"
}

# The signed zones, for DANE: a root of our own, whose key is the validating resolver's
# trust anchor ($KNOT_ANCHOR), test. below it (signed, with a DS at the root), and under
# test. (each TLSA record at _$RELAY_PORT._tcp of the MX):
#   dane.test   signed, with a DS in test.; four MX:
#               mx1 (127.0.0.1)                     3 1 1 of the server key: matches
#               mx2 (127.0.0.3, server cert + CA)   2 0 1 of the CA certificate: matches
#               mx3 (127.0.0.4, self-signed)        3 1 1 of its key: matches, and is valid
#                                                   under DANE-EE whatever WebPKI says
#               mx4 (127.0.0.1)                     3 1 1 of another key: a record left
#                                                   behind after a renewal; no match
#   bogus.test  signed, but the DS in test. matches none of its keys: every answer is bogus
#   expired.test  signed by ldns-signzone with signatures that expired in 2020, served as
#               they are (knot does not sign it): bogus as well
#   mail.test   (write_zone) delegated from test. without a DS: insecure, DANE does not
#               apply (its mx1 has a TLSA record all the same)
#   edge.test   (write_edge_zone) delegated from test. without a DS: MX sets as senders
#               must read them (an IP literal, 500 records, a set that fits TCP only)
spki_sha256() { openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1; }

cert_sha256() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

ds_of() { keymgr -c "$KNOT_CONF" "$1" ds | awk '$5 == 2'; }

write_signed_zones() {
    local tlsa=_$RELAY_PORT._tcp
    write_expired_zone
    cat >"$KNOT_DIR/root.zone" <<EOF
\$ORIGIN .
\$TTL 60
.          SOA  ns.test. hostmaster.test. 1 60 60 600 1
.          NS   ns.test.
test.      NS   ns.test.
ns.test.   A    127.0.0.1
$(ds_of test.)
EOF
    cat >"$KNOT_DIR/test.zone" <<EOF
\$ORIGIN test.
\$TTL 60
@          SOA  ns hostmaster 1 60 60 600 1
@          NS   ns
ns         A    127.0.0.1
mail       NS   ns
dane       NS   ns
$(ds_of dane.test.)
bogus      NS   ns
bogus      DS   4242 13 2 $(printf '%064d' 0)
expired    NS   ns
$(sed 's/^expired\.test\.[[:space:]]*IN/expired.test. 60 IN/' "$KNOT_DIR/ldns/"*.ds)
edge       NS   ns
EOF
    write_edge_zone
    cat >"$KNOT_DIR/dane.test.zone" <<EOF
\$ORIGIN dane.test.
\$TTL 60
@          SOA  ns.test. hostmaster.test. 1 60 60 600 1
@          NS   ns.test.
@          MX   10 mx1
@          MX   20 mx2
@          MX   30 mx3
@          MX   40 mx4
mx1        A    127.0.0.1
mx2        A    127.0.0.3
mx3        A    127.0.0.4
mx4        A    127.0.0.1
$tlsa.mx1  TLSA 3 1 1 $(spki_sha256 "$PKI_DIR/server.pem")
$tlsa.mx2  TLSA 2 0 1 $(cert_sha256 "$PKI_DIR/ca.pem")
$tlsa.mx3  TLSA 3 1 1 $(spki_sha256 "$PKI_DIR/selfsigned-leaf.pem")
$tlsa.mx4  TLSA 3 1 1 $(spki_sha256 "$PKI_DIR/wrong-ca.pem")
EOF
    cat >"$KNOT_DIR/bogus.test.zone" <<EOF
\$ORIGIN bogus.test.
\$TTL 60
@          SOA  ns.test. hostmaster.test. 1 60 60 600 1
@          NS   ns.test.
@          MX   10 mx
mx         A    127.0.0.1
$tlsa.mx   TLSA 3 1 1 $(spki_sha256 "$PKI_DIR/server.pem")
EOF
    keymgr -c "$KNOT_CONF" . dnskey | sed 's/^\. DNSKEY/. 3600 IN DNSKEY/' >"$KNOT_ANCHOR"
    grep -q DNSKEY "$KNOT_ANCHOR" || fail_start "keymgr gave no root DNSKEY for the trust anchor"
}

# expired.test, signed once with a validity that ended in 2020 (ldns-keygen makes its key
# and the DS for test.); knot serves the signed file as it is.
write_expired_zone() {
    local dir=$KNOT_DIR/ldns key
    mkdir -p "$dir"
    cat >"$dir/expired.test.zone" <<EOF
\$ORIGIN expired.test.
\$TTL 60
@          SOA  ns.test. hostmaster.test. 1 60 60 600 1
@          NS   ns.test.
@          MX   10 mx
mx         A    127.0.0.1
_$RELAY_PORT._tcp.mx   TLSA 3 1 1 $(spki_sha256 "$PKI_DIR/server.pem")
EOF
    key=$(cd "$dir" && ldns-keygen -a ECDSAP256SHA256 -k expired.test) || fail_start "ldns-keygen failed"
    (cd "$dir" && ldns-signzone -i 20200101000000 -e 20200201000000 -o expired.test expired.test.zone "$key") ||
        fail_start "ldns-signzone failed"
}

# edge.test, unsigned, for the MX answers that senders read in their own way:
#   literal   one MX, an IP literal (MX 10 127.0.0.1.): Postfix skips it, Exim refuses it,
#             so there is no usable MX at all
#   mixed     an IP literal at preference 10 and a host name (mx1, 127.0.0.1) at 20
#   big       500 MX records (mx001..mx500.big, each 127.0.0.1 through a wildcard): about
#             11 KB, only over TCP; the exporter keeps the first 16
#   tcp       8 MX with names of some 200 bytes (each 127.0.0.1 through a wildcard): about
#             1.7 KB, more than a 1232-byte UDP answer holds, so knot sets TC and the whole
#             set comes over TCP
write_edge_zone() {
    local i long
    long=$(printf 'x%.0s' $(seq 61))
    {
        cat <<EOF
\$ORIGIN edge.test.
\$TTL 60
@          SOA  ns.test. hostmaster.test. 1 60 60 600 1
@          NS   ns.test.
literal    MX   10 127.0.0.1.
mixed      MX   10 127.0.0.1.
mixed      MX   20 mx1
mx1        A    127.0.0.1
*.big      A    127.0.0.1
*.tcp      A    127.0.0.1
EOF
        for i in $(seq 500); do
            printf 'big        MX   %d mx%03d.big\n' "$i" "$i"
        done
        for i in $(seq 8); do
            # Each label its own, so that name compression cannot shrink the answer.
            printf 'tcp        MX   %d mx.a%d%s.b%d%s.c%d%s.tcp\n' "$((i * 10))" "$i" "$long" "$i" "$long" "$i" "$long"
        done
    } >"$KNOT_DIR/edge.test.zone"
}

# The signed zones' names, as knot spells them.
SIGNED_ZONES=(. test. dane.test. bogus.test.)

write_knot_config() {
    # A fresh key store at each start: the signed zones get new keys, the anchor with them.
    rm -rf "$KNOT_DIR"
    mkdir -p "$KNOT_DIR"
    write_zone 1
    local zone file
    {
        cat <<EOF
server:
    user: root:root
    rundir: "$KNOT_DIR"
    pidfile: "$KNOT_PID"
    listen: 127.0.0.1@$DNS_PORT
log:
  - target: "$KNOT_LOG"
    any: info
database:
    storage: "$KNOT_DIR"
control:
    listen: "$KNOT_SOCKET"
# Counters per query type (knotc stats mod-stats.query-type): the tests count the TLSA
# queries knot got.
mod-stats:
  - id: counters
    query-type: on
template:
  - id: default
    global-module: mod-stats/counters
policy:
  - id: test
    algorithm: ecdsap256sha256
    manual: on
    single-type-signing: on
zone:
  - domain: mail.test
    file: "$KNOT_ZONE"
    zonefile-load: whole
    journal-content: none
    zonefile-sync: -1
EOF
        cat <<EOF
  - domain: edge.test
    file: "$KNOT_DIR/edge.test.zone"
    zonefile-load: whole
    journal-content: none
    zonefile-sync: -1
  - domain: expired.test
    file: "$KNOT_DIR/ldns/expired.test.zone.signed"
    journal-content: none
    zonefile-sync: -1
EOF
        for zone in "${SIGNED_ZONES[@]}"; do
            file=${zone%.}
            cat <<EOF
  - domain: "$zone"
    file: "$KNOT_DIR/${file:-root}.zone"
    dnssec-signing: on
    dnssec-policy: test
    journal-content: none
    zonefile-sync: -1
EOF
        done
    } >"$KNOT_CONF"
    for zone in "${SIGNED_ZONES[@]}"; do
        keymgr -c "$KNOT_CONF" "$zone" generate algorithm=ecdsap256sha256 ksk=yes zsk=yes >/dev/null ||
            fail_start "keymgr cannot make a key for $zone"
    done
    write_signed_zones
}

stop_knot() {
    local pid
    pid=$(live_pid "$KNOT_PID" knotd) || return 0
    stop_session knot "$pid" kill -TERM "$pid"
}

start_knot() {
    : >"$KNOT_LOG"
    knotd -c "$KNOT_CONF" -d </dev/null >>"$KNOT_LOG" 2>&1 9>&- || fail_start "knotd failed to start"
    local i
    for i in $(seq 50); do
        if kdig -p "$DNS_PORT" @127.0.0.1 +short +timeout=1 +retry=0 mx1.mail.test A 2>/dev/null | grep -q 127.0.0.1; then
            kdig -p "$DNS_PORT" @127.0.0.1 +short +timeout=1 +retry=0 dane.test DNSKEY | grep -q '^257 ' ||
                fail_start "knotd serves dane.test unsigned (see $KNOT_LOG)"
            return 0
        fi
        sleep 0.2
    done
    fail_start "knotd does not answer on 127.0.0.1:$DNS_PORT"
}
