# tests/real/mta/pki.sh - the test PKI: the CA, the server certificate for localhost, the broken leaves, a second CA.
# Sourced by tests/real/mta.sh, whose header defines the variables used here.
# shellcheck shell=bash

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
