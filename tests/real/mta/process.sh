# tests/real/mta/process.sh - process handling and readiness: pid files, sessions, ports, banners, logs, the env file.
# Sourced by tests/real/mta.sh, whose header defines the variables used here.
# shellcheck shell=bash

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
