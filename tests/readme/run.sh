#!/usr/bin/env bash
# The README's own commands, run exactly as written: a README whose first command fails is
# a failing build.
#
#   tests/readme/run.sh
#
# From the "## Run it" section of README.md it takes every fenced ```sh block:
#   - the first block must be one command that starts the exporter; it is run with a
#     timeout, and /metrics on the address the README names (localhost:10027) must answer
#     with the embedded default's series within the time a first `cargo run --release`
#     needs to compile;
#   - every further block in that section is a one-shot command that must exit 0.
# Then the "## Deploy" section's configuration check is run against a copy of
# config/example.yml, as a new user would after `cp config/example.yml ...`.
# Every wait is bounded; the server is killed on exit. Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

ADDRESS=localhost:10027
COMPILE_BUDGET=${README_COMPILE_BUDGET:-900} # seconds for a first release build + start

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
work=$(mktemp -d /tmp/smtp_exporter-readme.XXXXXX)
server_pid=
finish() {
    local rc=$?
    trap - EXIT
    if [[ -n $server_pid ]]; then
        kill -TERM -- "-$server_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$server_pid" 2>/dev/null
    fi
    rm -rf "$work"
    if ((rc != 0 && failed == 0)); then failed=1; echo "FAIL - aborted (exit status $rc)"; fi
    echo "$passed passed, $failed failed"
    ((failed == 0))
    exit $?
}
trap finish EXIT

# Prints the fenced ```sh blocks of a `## ` section, one block per NUL-terminated record.
section_blocks() { # $1 = section heading text, e.g. "Run it"
    awk -v want="## $1" '
        /^## / { inside = ($0 == want); next }
        inside && /^[ \t]*```sh$/ { block = ""; collecting = 1; next }
        inside && collecting && /^[ \t]*```$/ { printf "%s%c", block, 0; collecting = 0; next }
        inside && collecting { sub(/^[ \t]+/, ""); block = block $0 "\n" }
    ' README.md
}

mapfile -d '' run_blocks < <(section_blocks "Run it")
if ((${#run_blocks[@]} == 0)); then
    fail "README.md has a \"## Run it\" section with a \`\`\`sh block"
    exit 1
fi

# 1. The first block starts the exporter.
first=${run_blocks[0]%$'\n'}
if (($(printf '%s' "$first" | grep -cv '^\s*$') != 1)); then
    fail "the first Run-it block is one command (it is: $first)"
else
    if curl -fsS -m 2 "http://$ADDRESS/metrics" >/dev/null 2>&1; then
        fail "$ADDRESS is already in use by another program; the README's address cannot be tested"
        exit 1
    fi
    echo "== running: $first"
    # A session of its own, so that the whole process group (cargo and the exporter) can
    # be stopped at the end.
    setsid timeout "$((COMPILE_BUDGET + 60))" bash -c "$first" >"$work/run.log" 2>&1 &
    server_pid=$!
    deadline=$((SECONDS + COMPILE_BUDGET))
    body=
    while ((SECONDS < deadline)) && kill -0 "$server_pid" 2>/dev/null; do
        body=$(curl -fsS -m 5 "http://$ADDRESS/metrics" 2>/dev/null) && [[ $body == *smtp_probe_success* ]] && break
        body=
        sleep 1
    done
    if [[ -z $body ]]; then
        fail "the first README command serves /metrics on $ADDRESS with probe series"
        tail -n 30 "$work/run.log"
    else
        ok "the first README command ($first) serves /metrics on $ADDRESS"
        ports=$(printf '%s\n' "$body" | grep -c '^smtp_probe_success{target="localhost",port="\(25\|465\|587\|2525\)"')
        if ((ports == 4)); then
            ok "the embedded default probes localhost on 25, 465, 587 and 2525"
        else
            fail "the embedded default probes localhost on 25, 465, 587 and 2525 (found $ports series)"
            printf '%s\n' "$body" | grep '^smtp_probe_success' || true
        fi
    fi
    kill -TERM -- "-$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=
fi

# 2. Every further block of "Run it" is a one-shot command that succeeds.
for block in "${run_blocks[@]:1}"; do
    while IFS= read -r line; do
        [[ -z ${line// /} || $line == \#* ]] && continue
        echo "== running: $line"
        if out=$(timeout 600 bash -c "$line" 2>&1); then
            ok "README command: $line"
        else
            fail "README command: $line"
            printf '%s\n' "$out" | tail -n 20
        fi
    done <<<"$block"
done

# 3. Deploy step 2: copy the example and check it, as the walkthrough says, on a machine
# where nothing else has been set up (no password file, no environment variables).
bin=${SMTP_EXPORTER_BIN:-target/release/smtp_exporter}
mapfile -d '' deploy_blocks < <(section_blocks "Deploy")
check_line=$(printf '%s' "${deploy_blocks[@]}" | grep -m1 -- '--config.check' || true)
if [[ -z $check_line ]]; then
    fail "the Deploy section checks the configuration with --config.check"
else
    cp config/example.yml "$work/config.yml"
    # The walkthrough's paths, mapped to the temporary copy and the built binary.
    cmd=${check_line//\/etc\/smtp_exporter\/config.yml/$work/config.yml}
    cmd=${cmd/smtp_exporter /$bin }
    cmd=${cmd%%#*}
    if out=$(env -i PATH="$PATH" bash -c "$cmd" 2>&1); then
        ok "Deploy's check of the copied example succeeds: $out"
    else
        fail "Deploy's check of the copied example succeeds ($cmd)"
        printf '%s\n' "$out"
    fi
fi
