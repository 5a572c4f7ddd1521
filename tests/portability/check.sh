#!/usr/bin/env bash
# The exporter builds beyond Linux: every Linux-only call sits in src/sys/linux.rs, which is
# compiled only for Linux, with a portable fallback beside it (src/sys/portable.rs).
# This machine cannot build for another target, so the rule is checked in the source:
#   - `libc::`, `std::os::fd`, `std::os::linux` appear in the exporter (src/) only in
#     src/sys/linux.rs;
#   - src/sys/mod.rs declares that file under #[cfg(target_os = "linux")] and the portable
#     one under #[cfg(not(target_os = "linux"))];
#   - libc is a dependency for Linux targets only (Cargo.toml).
# Prints "ok"/"FAIL" per check, ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
passed=0
failed=0
check() {
    local name=$1
    shift
    if "$@"; then passed=$((passed + 1)); echo "ok   - $name"; else failed=$((failed + 1)); echo "FAIL - $name"; fi
}

outside_sys() {
    local found
    # Comments may name them; code may not.
    found=$(grep -rnE 'libc::|std::os::(fd|linux)' src --include='*.rs' | grep -v '^src/sys/linux.rs:' |
        grep -vE '^[^:]+:[0-9]+:[[:space:]]*//')
    [[ -z $found ]] || { printf '%s\n' "$found"; return 1; }
}
gated() {
    grep -Pzq '#\[cfg\(target_os = "linux"\)\]\nmod linux;' src/sys/mod.rs &&
        grep -Pzq '#\[cfg\(not\(target_os = "linux"\)\)\]\nmod portable;' src/sys/mod.rs
}
libc_linux_only() {
    python3 - <<'PY'
import tomllib
manifest = tomllib.load(open("Cargo.toml", "rb"))
assert "libc" not in manifest.get("dependencies", {}), "libc is a dependency for every target"
linux = manifest["target"]['cfg(target_os = "linux")']["dependencies"]
assert "libc" in linux, linux
PY
}
check "no Linux-only call outside src/sys/linux.rs" outside_sys
check "src/sys/linux.rs is compiled for Linux only, with a portable fallback" gated
check "libc is a dependency for Linux targets only" libc_linux_only
echo "$passed passed, $failed failed"
((failed == 0))
