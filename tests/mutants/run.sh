#!/usr/bin/env bash
# tests/mutants/run.sh - mutation testing of the product crate with cargo-mutants: does the
# hermetic `cargo test` fail when the code is broken on purpose?
#
# Usage:
#   tests/mutants/run.sh                 # CI: the mutants in what the last commit changed
#                                        # under src/ (at most $MUTANTS_MAX of them; beyond
#                                        # that a shard that rotates with the commit count)
#   tests/mutants/run.sh --diff REV      # the mutants in what changed since REV
#   tests/mutants/run.sh -- ARGS...      # cargo mutants ARGS (e.g. -f 'src/probe/*.rs'),
#                                        # for a chosen scope; see tests/mutants/RESULTS.md
#
# Each mutant is one small change of src/ (a function body replaced by a default value, an
# operator swapped); it is caught when `cargo test` fails. A mutant that survives (missed)
# fails this run unless tests/mutants/accepted.txt lists it, by file and description
# (without line numbers), with the reason it is acceptable. cargo-mutants is installed
# (pinned version) when it is missing. Results stay in $MUTANTS_OUT (mutants.out/).
#
# Environment: MUTANTS_MAX (default 8), MUTANTS_JOBS (default 2), MUTANTS_OUT (default
# target/mutants), MUTANTS_TIMEOUT seconds per test run (default 180), MUTANTS_IN_PLACE=1
# to mutate this tree itself with one job (CI, at the end of tests/run-all.sh: it reuses
# the debug build that `cargo test` left, instead of building a copy from nothing; every
# mutated file is restored), MUTANTS_TEST_THREADS (default 8: the hermetic tests mostly
# wait on sockets and timers, so more threads than cores shorten each run).
#
# Each run is `cargo test --all-targets` (no doctests: the crate has none, and rustdoc
# would still be run for every mutant). Copies of the tree are built without debug
# information, and linked with lld when it is installed: both only make each mutant's
# build cheaper (measured on the 2-core machine: 5 s a mutant with four jobs, against
# 11 s with two jobs, debug information and the default test threads).
#
# Cost on the 2-core CI machine: about 40 s per mutant in place (an incremental build and
# the hermetic suite), so the default selection adds some 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=27.1.0
MAX=${MUTANTS_MAX:-8}
JOBS=${MUTANTS_JOBS:-2}
OUT=${MUTANTS_OUT:-target/mutants}
TIMEOUT=${MUTANTS_TIMEOUT:-180}
ACCEPTED=tests/mutants/accepted.txt

log() { printf 'mutants: %s\n' "$*" >&2; }
die() { printf 'mutants: error: %s\n' "$*" >&2; exit 1; }

if [[ $(cargo mutants --version 2>/dev/null) != "cargo-mutants $VERSION" ]]; then
    log "installing cargo-mutants $VERSION"
    cargo install --locked --quiet cargo-mutants --version "$VERSION" || die "cannot install cargo-mutants"
fi
[[ -f $ACCEPTED ]] || die "$ACCEPTED is missing"

mkdir -p "$OUT"
args=()
base=HEAD~1
case ${1:-} in
--) shift; args=("$@"); base= ;;
--diff) base=${2:?--diff needs a revision} ;;
"") ;;
*) die "unknown argument $1 (see the header of $0)" ;;
esac

if [[ -n $base ]]; then
    git rev-parse --verify --quiet "$base^{commit}" >/dev/null || die "no revision $base in this clone"
    diff=$OUT/change.diff
    git diff "$base" -- src/ >"$diff"
    if [[ ! -s $diff ]]; then
        log "nothing under src/ changed since $base: no mutants to run"
        exit 0
    fi
    count=$(cargo mutants --in-diff "$diff" --list | wc -l)
    args=(--in-diff "$diff")
    if ((count > MAX)); then
        shards=$(((count + MAX - 1) / MAX))
        shard=$(($(git rev-list --count HEAD) % shards))
        args+=(--shard "$shard/$shards")
        log "$count mutants in the change since $base; running shard $shard of $shards"
    else
        log "$count mutants in the change since $base"
    fi
    if ((count == 0)); then
        exit 0
    fi
fi

# The hermetic suite has just passed in the same run (tests/run-all.sh), so the baseline
# is skipped and the timeouts are fixed instead of measured.
where=(--jobs "$JOBS")
if [[ ${MUTANTS_IN_PLACE:-0} == 1 ]]; then
    where=(--in-place)
else
    # Fresh copies: no debug information to build and link (in place, the flags would
    # rebuild what `cargo test` just built).
    export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
    if command -v ld.lld >/dev/null; then
        export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-fuse-ld=lld"
    fi
fi
status=0
cargo mutants --baseline skip --timeout "$TIMEOUT" --build-timeout 900 "${where[@]}" \
    --output "$OUT" "${args[@]}" -- --all-targets -- --test-threads="${MUTANTS_TEST_THREADS:-8}" || status=$?
# 0: all caught; 2: some missed; 3: some timed out (caught as a hang); 4: baseline failed.
case $status in
0 | 2 | 3) ;;
*) die "cargo mutants failed (exit $status); see $OUT/mutants.out" ;;
esac

results=$OUT/mutants.out
strip() { sed -E 's/^([^:]+):[0-9]+:[0-9]+: /\1: /'; }
accepted=$(grep -v '^#' "$ACCEPTED" | sed -E 's/[[:space:]]+#.*$//; /^[[:space:]]*$/d' || true)
unlisted=()
while IFS= read -r line; do
    [[ -n $line ]] || continue
    key=$(strip <<<"$line")
    grep -qxF -- "$key" <<<"$accepted" || unlisted+=("$line")
done <"$results/missed.txt"
caught=$(wc -l <"$results/caught.txt")
missed=$(wc -l <"$results/missed.txt")
timeouts=$(wc -l <"$results/timeout.txt")
unviable=$(wc -l <"$results/unviable.txt")
log "caught $caught, timed out $timeouts (a hang counts as caught), missed $missed, unviable $unviable"
if ((${#unlisted[@]} > 0)); then
    printf 'mutants: survived, and not in %s:\n' "$ACCEPTED" >&2
    printf '  %s\n' "${unlisted[@]}" >&2
    exit 1
fi
log "OK"
