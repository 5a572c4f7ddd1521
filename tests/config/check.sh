#!/usr/bin/env bash
# Checks the shipped configuration files with the tools that read them:
#   - promtool check config on the Prometheus scrape configs (which load the alert rules);
#   - smtp_exporter --config.check on config/example.yml and on the Kubernetes ConfigMap;
#   - promtool check config on the hashmod sharding snippet of config/kubernetes/README.md.
# Needs promtool, python3 with PyYAML (Debian: python3-yaml) and a built binary
# (SMTP_EXPORTER_BIN, default target/release/smtp_exporter).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${SMTP_EXPORTER_BIN:-target/release/smtp_exporter}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

check() {
    local name=$1
    shift
    if out=$("$@" 2>&1); then
        echo "-- ok: $name"
        passed=$((passed + 1))
    else
        printf -- '-- FAILED: %s\n%s\n' "$name" "$out"
        failed=$((failed + 1))
    fi
}

check "promtool check config config/prometheus.yml" promtool check config config/prometheus.yml
check "promtool check config config/prometheus-probe.yml" promtool check config config/prometheus-probe.yml
check "example.yml passes --config.check" \
    env SMTP_EXPORTER_EXAMPLE_PASSWORD=example "$bin" --config.check --config.file=config/example.yml

python3 - "$tmp" <<'PY'
import sys, yaml
out = sys.argv[1]
docs = list(yaml.safe_load_all(open("config/kubernetes/smtp-exporter.yaml")))
kinds = [d["kind"] for d in docs]
assert kinds == ["ConfigMap", "Service", "StatefulSet"], kinds
open(f"{out}/k8s-config.yml", "w").write(docs[0]["data"]["config.yml"])
args = docs[2]["spec"]["template"]["spec"]["containers"][0]["args"]
replicas = docs[2]["spec"]["replicas"]
assert f"--shard=$(SHARD_INDEX)/{replicas}" in args, (args, replicas)
readme = open("config/kubernetes/README.md").read()
snippet = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
open(f"{out}/hashmod.yml", "w").write("scrape_configs:\n" + "".join("  " + l + "\n" for l in snippet.splitlines()))
PY
check "Kubernetes ConfigMap config passes --config.check" "$bin" --config.check --config.file="$tmp/k8s-config.yml"
check "Kubernetes StatefulSet shard argument matches replicas" test -s "$tmp/hashmod.yml"
check "hashmod sharding snippet passes promtool check config" promtool check config "$tmp/hashmod.yml"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
