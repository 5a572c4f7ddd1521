# tests/real/mta/packages.sh - installing what is missing (preseeding Postfix so that the system instance stays off).
# Sourced by tests/real/mta.sh, whose header defines the variables used here.
# shellcheck shell=bash

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
