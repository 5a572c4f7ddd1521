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

# ---------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

has_candidate() {
    local cand
    cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n $cand && $cand != "(none)" ]]
}

ensure_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0

    # apt's output goes to a file: package scripts may start services (e.g. the system
    # Dovecot) that would otherwise hold our stdout/stderr or the lock open for good.
    mkdir -p "$STATE_DIR"
    local apt_log=$STATE_DIR/apt.log
    log "installing missing packages: ${missing[*]} (output in $apt_log)"
    export DEBIAN_FRONTEND=noninteractive
    if ! is_installed postfix; then
        # Do not let the package configure/start a system-wide Postfix on port 25.
        debconf-set-selections <<EOF
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string $MTA_HOSTNAME
EOF
    fi
    local need_update=0
    for pkg in "${missing[@]}"; do
        has_candidate "$pkg" || need_update=1
    done
    ((need_update)) && log "package lists lack some packages; running apt-get update first"
    {
        if ((need_update)); then
            apt-get update -q
        fi
        apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}"
    } </dev/null >"$apt_log" 2>&1 9>&- || {
        tail -n 30 "$apt_log" >&2
        die "package installation failed (see $apt_log)"
    }
}

# ---------------------------------------------------------------------------------------
# PKI: test CA, server certificate for localhost, and an unrelated second CA
# ---------------------------------------------------------------------------------------

# The [req] and [dn] sections an openssl request config starts with.
req_sections() { # $1 = common name, $2 = extra [req] lines
    printf '[req]\ndistinguished_name = dn\nprompt = no\n%s[dn]\nCN = %s\nO = smtp_exporter tests\n' "$2" "$1"
}

make_ca() { # $1 = basename, $2 = common name
    local base=$1 cn=$2
    {
        req_sections "$cn" $'x509_extensions = v3_ca\n'
        cat <<EOF
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    } >"$PKI_DIR/$base.cnf"
    openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 30 \
        -config "$PKI_DIR/$base.cnf" \
        -keyout "$PKI_DIR/$base.key" -out "$PKI_DIR/$base.pem" 2>/dev/null
}

generate_pki() {
    rm -rf "$PKI_DIR"
    mkdir -p "$PKI_DIR"
    chmod 0755 "$PKI_DIR"
    (
        umask 077 # private keys: root only (Postfix reads them before dropping privileges)
        make_ca ca "smtp_exporter test CA"
        make_ca wrong-ca "smtp_exporter unrelated CA"

        {
            req_sections "$SERVER_NAME" ""
            cat <<EOF
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:$SERVER_NAME, IP:127.0.0.1, DNS:mx1.mail.test, DNS:mx1.dane.test, DNS:mx2.dane.test, DNS:mx4.dane.test, DNS:mx.bogus.test, $(printf 'DNS:mta-sts.%s.mail.test, ' two sts-missing sts-testing sts-404 sts-redirect sts-big sts-ctype | sed 's/, $//')
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
        } >"$PKI_DIR/server.cnf"
        openssl req -new -nodes -newkey rsa:2048 -sha256 -config "$PKI_DIR/server.cnf" \
            -keyout "$PKI_DIR/server.key" -out "$PKI_DIR/server.csr" 2>/dev/null
        openssl x509 -req -sha256 -days 30 -in "$PKI_DIR/server.csr" \
            -CA "$PKI_DIR/ca.pem" -CAkey "$PKI_DIR/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
            -extfile "$PKI_DIR/server.cnf" -extensions v3_server \
            -out "$PKI_DIR/server.pem" 2>/dev/null
    )
    (
        umask 077
        make_bad_leaves
        make_self_signed
    )
    # The chain a DANE-TA(2) record of the CA needs the server to present.
    cat "$PKI_DIR/server.pem" "$PKI_DIR/ca.pem" >"$PKI_DIR/server-chain.pem"
    chmod 0644 "$PKI_DIR"/*.pem
    openssl verify -CAfile "$PKI_DIR/ca.pem" "$PKI_DIR/server.pem" >/dev/null ||
        die "generated server certificate does not verify against the test CA"
}

# Two certificates signed by the test CA that must fail verification: one that expired in
# 2021 (`openssl ca` can set past dates, which `openssl x509 -req` cannot on OpenSSL 3.0),
# and one valid now but for another name.
make_bad_leaves() {
    local ca_dir=$PKI_DIR/ca-db
    mkdir -p "$ca_dir/new"
    : >"$ca_dir/index.txt"
    cat >"$PKI_DIR/ca-sign.cnf" <<CNF
[ca]
default_ca = test_ca
[test_ca]
database = $ca_dir/index.txt
new_certs_dir = $ca_dir/new
serial = $ca_dir/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = \$ENV::LEAF_SAN
CNF
    openssl rand -hex 8 >"$ca_dir/serial"
    local name subject san dates
    for name in expired wrongname; do
        case $name in
        expired)
            subject="/CN=$SERVER_NAME" san="DNS:$SERVER_NAME, IP:127.0.0.1"
            dates=(-startdate 20200101000000Z -enddate 20210101000000Z)
            ;;
        wrongname)
            subject="/CN=wrong.example.test" san="DNS:wrong.example.test"
            dates=(-days 30)
            ;;
        esac
        openssl req -new -nodes -newkey rsa:2048 -sha256 -subj "$subject" \
            -keyout "$PKI_DIR/$name.key" -out "$PKI_DIR/$name.csr" 2>/dev/null
        LEAF_SAN=$san openssl ca -batch -notext -config "$PKI_DIR/ca-sign.cnf" \
            -cert "$PKI_DIR/ca.pem" -keyfile "$PKI_DIR/ca.key" -extensions v3_leaf \
            "${dates[@]}" -in "$PKI_DIR/$name.csr" -out "$PKI_DIR/$name.pem" 2>/dev/null ||
            die "cannot sign the $name test certificate"
    done
}

# Self-signed certificates made the way most guides say: `openssl req -x509` (which marks
# them CA:TRUE), and the same with CA:FALSE. Each one is its own "CA file".
make_self_signed() {
    local san="subjectAltName=DNS:mail.test,DNS:$SERVER_NAME,IP:127.0.0.1"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=mail.test -addext "$san" \
        -keyout "$PKI_DIR/selfsigned.key" -out "$PKI_DIR/selfsigned.pem" 2>/dev/null ||
        die "cannot make the self-signed test certificate"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=mail.test -addext "$san" \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$PKI_DIR/selfsigned-leaf.key" -out "$PKI_DIR/selfsigned-leaf.pem" 2>/dev/null ||
        die "cannot make the self-signed CA:FALSE test certificate"
}

# ---------------------------------------------------------------------------------------
# Configuration files
# ---------------------------------------------------------------------------------------

# One smtpd listener line of master.cf on $LISTEN_ADDR:$1, logging as $2, with the
# remaining arguments as -o overrides.
smtpd_listener() {
    local port=$1 name=$2 option
    shift 2
    printf '%s:%s inet n - n - - smtpd\n  -o syslog_name=postfix-smtp-exporter/%s\n' "$LISTEN_ADDR" "$port" "$name"
    for option in "$@"; do
        printf '  -o %s\n' "$option"
    done
}

write_postfix_config() {
    rm -rf "$PF_CONF"
    mkdir -p "$PF_CONF" "$PF_QUEUE" "$PF_DATA"
    chown root:root "$PF_DIR" "$PF_CONF" "$PF_QUEUE"
    chmod 0755 "$PF_DIR" "$PF_CONF" "$PF_QUEUE"
    chown postfix:postfix "$PF_DATA"
    chmod 0700 "$PF_DATA"

    cat >"$PF_CONF/main.cf" <<EOF
# Private Postfix instance for smtp_exporter real-server tests (generated by mta.sh).
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DATA
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-smtp-exporter
maillog_file = $PF_LOG
maillog_file_prefixes = $LOG_DIR

inet_interfaces = $LISTEN_ADDR
inet_protocols = all
myhostname = $MTA_HOSTNAME
mydomain = example.test
myorigin = \$mydomain
biff = no
append_dot_mydomain = no

# Accept mail for example.test (or anything after AUTH) and throw it away.
mydestination =
mynetworks = 127.0.0.1/32
relay_domains = example.test, envelope.mail.test, deliver.test
recipient_delimiter = +
# deliver.test goes to the private Dovecot over LMTP, except +void, which is discarded;
# +held waits in the hold queue until a test releases it (postsuper -H).
transport_maps = inline:{ $INBOX_VOID=discard:, deliver.test=lmtp:unix:private/dovecot-lmtp }
smtpd_recipient_restrictions = check_recipient_access inline:{ $INBOX_HELD=HOLD }
# What a DKIM/SPF/DMARC milter would add, for the delivery probe to read.
header_checks = regexp:$PF_CONF/header_checks
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:local delivery is disabled
default_transport = discard
relay_transport = discard
smtp_dns_support_level = disabled
smtpd_peername_lookup = no

# TLS (per-service security levels are set in master.cf)
smtpd_tls_cert_file = $PKI_DIR/server.pem
smtpd_tls_key_file = $PKI_DIR/server.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes

# SASL via the private Dovecot (enabled per service in master.cf)
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = no
smtpd_tls_auth_only = yes
smtpd_sasl_security_options = noanonymous
EOF

    printf '%s\n' '/^Subject: smtp_exporter delivery probe/ PREPEND Authentication-Results: mx.example.test; dkim=pass header.d=example.test; spf=pass smtp.mailfrom=example.test; dmarc=fail header.from=example.test' \
        >"$PF_CONF/header_checks"

    # chroot is "n" everywhere so that paths (auth socket, certificates) stay simple.
    {
        printf '# service type  private unpriv  chroot  wakeup  maxproc command + args\n'
        printf '# --- smtp_exporter test listeners ---\n'
        smtpd_listener "$RELAY_PORT" relay smtpd_tls_security_level=may
        # The relay also on ::1, where the test zone's mx1 has its AAAA.
        LISTEN_ADDR='[::1]' smtpd_listener "$RELAY_PORT" relay6 smtpd_tls_security_level=may
        # The relay on two more loopback addresses, for the DANE zone's MX hosts: one
        # presents the server certificate with the CA above it (DANE-TA), one a
        # self-signed certificate (DANE-EE).
        LISTEN_ADDR=127.0.0.3 smtpd_listener "$RELAY_PORT" relay-chain smtpd_tls_security_level=may \
            "smtpd_tls_cert_file=$PKI_DIR/server-chain.pem"
        LISTEN_ADDR=127.0.0.4 smtpd_listener "$RELAY_PORT" relay-selfsigned smtpd_tls_security_level=may \
            "smtpd_tls_cert_file=$PKI_DIR/selfsigned-leaf.pem" "smtpd_tls_key_file=$PKI_DIR/selfsigned-leaf.key"
        smtpd_listener "$NOTLS_PORT" notls smtpd_tls_security_level=none
        # An open relay on purpose, the way a too-wide mynetworks makes one.
        smtpd_listener "$OPENRELAY_PORT" openrelay smtpd_tls_security_level=may mynetworks=127.0.0.0/8 \
            smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination
        smtpd_listener "$SUBMISSION_PORT" submission smtpd_tls_security_level=encrypt \
            smtpd_sasl_auth_enable=yes smtpd_tls_auth_only=yes
        smtpd_listener "$SUBMISSIONS_PORT" submissions smtpd_tls_wrappermode=yes smtpd_sasl_auth_enable=yes
        smtpd_listener "$ALT_PORT" alt smtpd_tls_security_level=encrypt smtpd_sasl_auth_enable=yes \
            smtpd_tls_auth_only=yes
        local cert
        for cert in expired wrongname selfsigned selfsigned-leaf; do
            local port_var=${cert^^}_PORT
            port_var=${port_var//-/_}
            smtpd_listener "${!port_var}" "$cert" smtpd_tls_wrappermode=yes \
                "smtpd_tls_cert_file=$PKI_DIR/$cert.pem" "smtpd_tls_key_file=$PKI_DIR/$cert.key"
        done
        cat <<EOF
# postscreen as on a typical MX: the client must wait for the whole greeting (pregreet
# test); the access list is emptied so that loopback is not waved through, and a pass is
# remembered for one second only, so every probe meets the wait.
$LISTEN_ADDR:$POSTSCREEN_PORT inet n - n - 1 postscreen
  -o syslog_name=postfix-smtp-exporter/postscreen
  -o postscreen_access_list=
  -o postscreen_greet_wait=$POSTSCREEN_GREET_WAIT
  -o postscreen_greet_action=enforce
  -o postscreen_greet_ttl=1s
smtpd     pass  -       -       n       -       -       smtpd
  -o syslog_name=postfix-smtp-exporter/postscreen-smtpd
  -o smtpd_tls_security_level=may
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
# --- internal services ---
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    } >"$PF_CONF/master.cf"
}

write_dovecot_config() {
    rm -rf "$DC_DIR"
    mkdir -p "$DC_DIR" "$DC_STATE"
    chmod 0755 "$DC_DIR"

    # {PLAIN.b64} keeps any password intact (':' etc.) and still allows CRAM-MD5.
    local b64
    b64=$(printf '%s' "$AUTH_PASSWORD" | base64 -w0)
    local inbox_b64
    inbox_b64=$(printf '%s' "$INBOX_PASSWORD" | base64 -w0)
    (umask 027 && printf '%s:{PLAIN.b64}%s::::::\n' "$AUTH_USER" "$b64" "$INBOX_USER" "$inbox_b64" >"$DC_DIR/users")
    chgrp dovecot "$DC_DIR/users"
    # Mail homes belong to the static userdb's user.
    mkdir -p "$DC_DIR/home" "$DC_DIR/sieve"
    chown nobody:nogroup "$DC_DIR/home"
    chmod 0700 "$DC_DIR/home"
    cat >"$DC_DIR/sieve/before.sieve" <<EOF
require ["envelope", "fileinto"];
if envelope :is "to" "$INBOX_JUNK" { fileinto "Junk"; stop; }
if envelope :is "to" "$INBOX_ARCHIVE" { fileinto "Archive"; stop; }
EOF

    cat >"$DC_CONF" <<EOF
# Private Dovecot instance for smtp_exporter real-server tests (generated by mta.sh).
# SASL authentication for the private Postfix, LMTP delivery and IMAP on loopback.
instance_name = dovecot-smtp-exporter
base_dir = $DC_RUN
state_dir = $DC_STATE
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <$PKI_DIR/server.pem
ssl_key = <$PKI_DIR/server.key
mail_location = maildir:~/Maildir
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
log_path = $DC_LOG
info_log_path = $DC_LOG
default_internal_user = dovecot
default_login_user = dovenull

disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5
auth_verbose = yes
auth_failure_delay = $AUTH_FAILURE_DELAY

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC_DIR/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DC_DIR/home/%u allow_all_users=yes
}

namespace inbox {
  inbox = yes
  separator = /
  mailbox Junk {
    special_use = \\Junk
    auto = create
  }
  mailbox Archive {
    auto = create
  }
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}

service lmtp {
  unix_listener $PF_QUEUE/private/dovecot-lmtp {
    mode = 0600
    user = postfix
    group = postfix
  }
}

protocol lmtp {
  mail_plugins = \$mail_plugins sieve
}

# The delivery tests run 20 probes of one mailbox at once (the default allows 10).
protocol imap {
  mail_max_userip_connections = 40
}

plugin {
  sieve_before = $DC_DIR/sieve/before.sieve
}

service auth {
  unix_listener $PF_QUEUE/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
    if [[ $AUTH_PENALTY != yes ]]; then
        # Dovecot's anvil otherwise delays each further failed login from the same IP
        # (up to 15 s), which would make wrong-password tests slow and flaky.
        cat >>"$DC_CONF" <<EOF

service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
    fi
}

write_env_file() {
    (umask 077 && printf '%s' "$INBOX_PASSWORD" >"$INBOX_PASSWORD_FILE")
    (umask 077 && printf '%s' "$AUTH_PASSWORD" >"$PASSWORD_FILE")
    chmod 0600 "$PASSWORD_FILE"
    {
        printf '# Written by tests/real/mta.sh start; source it or parse KEY=VALUE lines.\n'
        printf '%s=%q\n' \
            MTA_HOST "$LISTEN_ADDR" \
            RELAY_PORT "$RELAY_PORT" \
            SUBMISSION_PORT "$SUBMISSION_PORT" \
            SUBMISSIONS_PORT "$SUBMISSIONS_PORT" \
            ALT_PORT "$ALT_PORT" \
            NOTLS_PORT "$NOTLS_PORT" \
            OPENRELAY_PORT "$OPENRELAY_PORT" \
            IMAP_PORT "$IMAP_PORT" \
            IMAPS_PORT "$IMAPS_PORT" \
            INBOX_USER "$INBOX_USER" \
            INBOX_PASSWORD_FILE "$INBOX_PASSWORD_FILE" \
            INBOX_MAILDIR "$DC_DIR/home/$INBOX_USER/Maildir" \
            POSTFIX_CONF "$PF_CONF" \
            EXPIRED_PORT "$EXPIRED_PORT" \
            WRONGNAME_PORT "$WRONGNAME_PORT" \
            SELFSIGNED_PORT "$SELFSIGNED_PORT" \
            SELFSIGNED_LEAF_PORT "$SELFSIGNED_LEAF_PORT" \
            POSTSCREEN_PORT "$POSTSCREEN_PORT" \
            POSTSCREEN_GREET_WAIT "$POSTSCREEN_GREET_WAIT" \
            SELFSIGNED_CA_FILE "$PKI_DIR/selfsigned.pem" \
            SELFSIGNED_LEAF_CA_FILE "$PKI_DIR/selfsigned-leaf.pem" \
            CA_FILE "$PKI_DIR/ca.pem" \
            WRONG_CA_FILE "$PKI_DIR/wrong-ca.pem" \
            AUTH_USER "$AUTH_USER" \
            AUTH_PASSWORD_FILE "$PASSWORD_FILE" \
            SERVER_NAME "$SERVER_NAME" \
            BANNER_HOSTNAME "$MTA_HOSTNAME" \
            POSTFIX_LOG "$PF_LOG" \
            DOVECOT_LOG "$DC_LOG" \
            DNS_PORT "$DNS_PORT" \
            DNS_ZONE_FILE "$KNOT_ZONE" \
            KNOT_CONF "$KNOT_CONF" \
            DNS_TRUST_ANCHORS "$KNOT_ANCHOR" \
            UNBOUND_PORT "$UNBOUND_PORT" \
            UNBOUND_LOG "$UNBOUND_LOG" \
            UNBOUND_PLAIN_PORT "$UNBOUND_PLAIN_PORT" \
            UNBOUND_PLAIN_LOG "$UNBOUND_PLAIN_LOG" \
            DNSMASQ_PORT "$DNSMASQ_PORT" \
            DNSMASQ_LOG "$DNSMASQ_LOG" \
            MTA_STS_PORT "$MTA_STS_PORT"
    } >"$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------------------------------
# Process handling
# ---------------------------------------------------------------------------------------

# Prints the pid from a pid file if that process is alive and its executable matches.
live_pid() { # $1 = pid file, $2 = expected executable basename
    local pidfile=$1 exe=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */"$exe" ]] || return 1
    printf '%s\n' "$pid"
}

wait_gone() { # $1 = pid, $2 = seconds
    local pid=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Pids of all processes in session $1. Both Postfix's master and Dovecot's master call
# setsid(), so their session id is their own pid and every child they spawn shares it.
session_pids() {
    local sid=$1 stat rest
    local -a fields
    for stat in /proc/[0-9]*/stat; do
        { IFS= read -r rest <"$stat"; } 2>/dev/null || continue # process may be gone
        rest=${rest##*) } # skip "pid (comm) " -- comm may contain spaces
        read -r -a fields <<<"$rest"
        # fields: 0 state, 1 ppid, 2 pgrp, 3 session
        # Zombies are already dead (only not yet reaped by their new parent); skip them.
        if [[ ${fields[3]:-} == "$sid" && ${fields[0]} != Z ]]; then
            stat=${stat#/proc/}
            printf '%s\n' "${stat%/stat}"
        fi
    done
}

# Ask a master process to stop (the command in "$@"), then make sure the master and every
# process of its session are gone, so that no child keeps a listening socket open.
stop_session() { # $1 = name, $2 = master pid, $3... = stop command
    local name=$1 pid=$2 i left
    shift 2
    log "stopping private $name (master pid $pid)"
    "$@" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 15 || log "$name master $pid did not exit in time"
    for ((i = 0; i < 50; i++)); do
        left=$(session_pids "$pid")
        [[ -z $left ]] && return 0
        sleep 0.1
    done
    log "killing leftover $name processes: ${left//$'\n'/ }"
    # shellcheck disable=SC2086 # word splitting of the pid list is intended
    kill -KILL $left 2>/dev/null || true
    sleep 0.2
    [[ -z $(session_pids "$pid") ]] || die "could not stop $name processes: $(session_pids "$pid")"
}

stop_postfix() {
    local pid
    pid=$(live_pid "$PF_QUEUE/pid/master.pid" master) || return 0
    stop_session Postfix "$pid" postfix -c "$PF_CONF" stop
}

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

# ---------------------------------------------------------------------------------------
# Resolvers in front of knot, as the exporter meets them (issue 25)
# ---------------------------------------------------------------------------------------

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

# nginx serves the MTA-STS policies of the test zone on 127.0.0.1:$MTA_STS_PORT with the
# server certificate (whose names include every mta-sts.*.mail.test), one server block per
# policy case (see write_zone).
write_nginx_config() {
    mkdir -p "$NGINX_DIR"
    printf 'version: STSv1\r\nmode: enforce\r\nmx: mx1.mail.test\r\nmax_age: 604800\r\n%s' \
        "$(head -c 70000 /dev/zero | tr '\0' '#')" >"$NGINX_DIR/big.txt"
    local block
    {
        printf 'pid %s/nginx.pid;\nerror_log %s/nginx-error.log;\nworker_processes 1;\nevents { worker_connections 64; }\nhttp {\n' \
            "$NGINX_DIR" "$LOG_DIR"
        printf '  access_log %s/nginx-access.log;\n  client_body_temp_path %s/tmp;\n  proxy_temp_path %s/tmp;\n  fastcgi_temp_path %s/tmp;\n  uwsgi_temp_path %s/tmp;\n  scgi_temp_path %s/tmp;\n' \
            "$LOG_DIR" "$NGINX_DIR" "$NGINX_DIR" "$NGINX_DIR" "$NGINX_DIR" "$NGINX_DIR"
        printf '  ssl_certificate %s/server.pem;\n  ssl_certificate_key %s/server.key;\n' "$PKI_DIR" "$PKI_DIR"
        for block in \
            'two|default_type text/plain; return 200 "version: STSv1\r\nmode: enforce\r\nmx: mx1.mail.test\r\nmx: mx2.mail.test\r\nmax_age: 604800\r\n";' \
            'sts-missing|default_type text/plain; return 200 "version: STSv1\r\nmode: enforce\r\nmx: other.mail.test\r\nmax_age: 604800\r\n";' \
            'sts-testing|default_type text/plain; return 200 "version: STSv1\r\nmode: testing\r\nmx: *.mail.test\r\nmax_age: 86400\r\n";' \
            'sts-404|return 404;' \
            'sts-redirect|return 301 https://mta-sts.two.mail.test/.well-known/mta-sts.txt;' \
            "sts-big|default_type text/plain; alias $NGINX_DIR/big.txt;" \
            'sts-ctype|default_type text/html; return 200 "version: STSv1\r\nmode: enforce\r\nmx: mx1.mail.test\r\nmax_age: 604800\r\n";'; do
            printf '  server {\n    listen 127.0.0.1:%s ssl;\n    server_name mta-sts.%s.mail.test;\n    location = /.well-known/mta-sts.txt { %s }\n  }\n' \
                "$MTA_STS_PORT" "${block%%|*}" "${block#*|}"
        done
        printf '}\n'
    } >"$NGINX_CONF"
    mkdir -p "$NGINX_DIR/tmp"
}

stop_nginx() {
    local pid
    pid=$(live_pid "$NGINX_DIR/nginx.pid" nginx) || return 0
    stop_session nginx "$pid" kill -TERM "$pid"
}

start_nginx() {
    nginx -c "$NGINX_CONF" -t >>"$LOG_DIR/nginx-error.log" 2>&1 || fail_start "nginx -t failed"
    nginx -c "$NGINX_CONF" </dev/null >>"$LOG_DIR/nginx-error.log" 2>&1 9>&- || fail_start "nginx failed to start"
}

stop_dovecot() {
    local pid
    pid=$(live_pid "$DC_RUN/master.pid" dovecot) || return 0
    stop_session Dovecot "$pid" kill -TERM "$pid"
}

all_ports() {
    printf '%s\n' "$RELAY_PORT" "$NOTLS_PORT" "$OPENRELAY_PORT" "$SUBMISSION_PORT" "$SUBMISSIONS_PORT" "$ALT_PORT" \
        "$EXPIRED_PORT" "$WRONGNAME_PORT" "$SELFSIGNED_PORT" "$SELFSIGNED_LEAF_PORT" "$POSTSCREEN_PORT"
}

port_in_use() { # something accepts connections on 127.0.0.1:$1
    timeout 2 bash -c "exec 3<>/dev/tcp/$LISTEN_ADDR/$1" 2>/dev/null
}

check_ports_free() {
    local port busy=()
    for port in $(all_ports) "$IMAP_PORT" "$IMAPS_PORT"; do
        port_in_use "$port" && busy+=("$port")
    done
    if ((${#busy[@]})); then
        command -v ss >/dev/null && ss -ltnp >&2 || true
        die "port(s) ${busy[*]} on $LISTEN_ADDR are already in use by another program;" \
            "choose others with RELAY_PORT/NOTLS_PORT/OPENRELAY_PORT/SUBMISSION_PORT/SUBMISSIONS_PORT/ALT_PORT/EXPIRED_PORT/WRONGNAME_PORT/SELFSIGNED_PORT/SELFSIGNED_LEAF_PORT/POSTSCREEN_PORT"
    fi
}

# True once the port answers with a 220 greeting (after the TLS handshake if $2 = tls).
banner_ok() { # $1 = port, $2 = plain|tls
    local args=(--server "$LISTEN_ADDR:$1" --quit-after CONNECT --timeout 15
        --to "$AUTH_USER" --from "$AUTH_USER" --helo probe.example.test)
    [[ $2 == tls ]] && args+=(--tls-on-connect)
    swaks "${args[@]}" </dev/null >/dev/null 2>&1
}

# Start failed half-way: show the logs and stop whatever is already running.
fail_start() {
    show_logs
    stop_postfix
    stop_dovecot
    stop_resolvers
    die "$@"
}

show_logs() {
    local f
    for f in "$PF_LOG" "$DC_LOG"; do
        [[ -f $f ]] || continue
        printf '\n--- last lines of %s ---\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT)) pending port mode
    while :; do
        pending=()
        [[ -S $PF_QUEUE/private/auth ]] || pending+=("dovecot-auth-socket")
        [[ -S $PF_QUEUE/private/dovecot-lmtp ]] || pending+=("dovecot-lmtp-socket")
        port_in_use "$IMAP_PORT" || pending+=("imap:$IMAP_PORT")
        port_in_use "$IMAPS_PORT" || pending+=("imaps:$IMAPS_PORT")
        for port in $(all_ports); do
            mode=plain
            case $port in
            "$SUBMISSIONS_PORT" | "$EXPIRED_PORT" | "$WRONGNAME_PORT" | "$SELFSIGNED_PORT" | "$SELFSIGNED_LEAF_PORT") mode=tls ;;
            esac
            banner_ok "$port" "$mode" || pending+=("$port")
        done
        ((${#pending[@]} == 0)) && return 0
        if ((SECONDS >= deadline)); then
            fail_start "not ready after ${START_TIMEOUT}s; no 220 banner / socket for: ${pending[*]}"
        fi
        sleep 0.5
    done
}

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
