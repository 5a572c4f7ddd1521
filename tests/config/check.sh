#!/usr/bin/env bash
# Checks the shipped configuration files with the tools that read them:
#   - promtool check config on the Prometheus scrape configs (which load the alert rules);
#   - smtp_exporter --config.check on config/example.yml and on the Kubernetes ConfigMap;
#   - promtool check config on the hashmod sharding snippet of config/kubernetes/README.md;
#   - systemd-analyze verify on the systemd unit (the binary path pointed at the build);
#   - README "Deploy" step 4 applied to Debian's /etc/prometheus/prometheus.yml, checked
#     by promtool, with the rules at the path alerts.yml's header names.
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
check "example.yml passes --config.check as shipped, with no password set up" \
    env -i "$bin" --config.check --config.file=config/example.yml

# Each Python check prints what is wrong and exits non-zero; `check` counts it.
k8s() {
    python3 - "$tmp" <<'PY'
import sys, yaml
out = sys.argv[1]
docs = list(yaml.safe_load_all(open("config/kubernetes/smtp-exporter.yaml")))
kinds = [d["kind"] for d in docs]
assert kinds == ["ConfigMap", "Service", "StatefulSet"], kinds
open(f"{out}/k8s-config.yml", "w").write(docs[0]["data"]["config.yml"])
readme = open("config/kubernetes/README.md").read()
snippet = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
open(f"{out}/hashmod.yml", "w").write("scrape_configs:\n" + "".join("  " + l + "\n" for l in snippet.splitlines()))
PY
}
shard_matches_replicas() {
    python3 - <<'PY'
import yaml
docs = list(yaml.safe_load_all(open("config/kubernetes/smtp-exporter.yaml")))
args = docs[2]["spec"]["template"]["spec"]["containers"][0]["args"]
replicas = docs[2]["spec"]["replicas"]
assert f"--shard=$(SHARD_INDEX)/{replicas}" in args, (args, replicas)
PY
}
# README "Deploy" step 4 applied to Debian's own prometheus.yml: the rules file goes where
# alerts.yml's header says, and the merged configuration passes promtool.
readme_prometheus_merge() {
    python3 - "$tmp" <<'PY'
import re, sys, textwrap, yaml
out = sys.argv[1]
readme = open("README.md").read()
deploy = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
step = deploy.split("4. **Point Prometheus at it**", 1)[1].split("\n5. ", 1)[0]
install = re.search(r"install -D -m 0644 config/alerts.yml (\S+)", step)
assert install, "step 4 installs config/alerts.yml"
rules_path = install.group(1)
snippet = yaml.safe_load(textwrap.dedent(re.search(r"```yaml\n(.*?)```", step, re.S).group(1)))
assert snippet["rule_files"] == [rules_path], (snippet["rule_files"], rules_path)
header = open("config/alerts.yml").read().split("groups:", 1)[0]
assert f"- {rules_path}" in header, f"alerts.yml's header does not name {rules_path}"
base = yaml.safe_load(open("/etc/prometheus/prometheus.yml"))
base["rule_files"] = (base.get("rule_files") or []) + ["alerts.yml"]
base["scrape_configs"] = (base.get("scrape_configs") or []) + snippet["scrape_configs"]
jobs = [j["job_name"] for j in base["scrape_configs"]]
assert len(jobs) == len(set(jobs)), jobs
assert "smtp_exporter" in jobs, jobs
open(f"{out}/prometheus.yml", "w").write(yaml.safe_dump(base))
open(f"{out}/alerts.yml", "w").write(open("config/alerts.yml").read())
PY
}
# The systemd unit as shipped, with the binary where this build put it.
unit_verifies() {
    sed "s|/usr/local/bin/smtp_exporter|$(realpath "$bin")|" config/smtp_exporter.service >"$tmp/smtp_exporter.service"
    local out
    out=$(systemd-analyze verify "$tmp/smtp_exporter.service" 2>&1) || { printf '%s\n' "$out"; return 1; }
    [[ -z $out ]] || { printf '%s\n' "$out"; return 1; }
}
check "the systemd unit passes systemd-analyze verify" unit_verifies
check "Kubernetes manifests parse (ConfigMap, Service, StatefulSet)" k8s
check "Kubernetes StatefulSet shard argument matches replicas" shard_matches_replicas
check "README Deploy step 4 puts the rules where alerts.yml says and merges into Debian's prometheus.yml" readme_prometheus_merge
check "the merged prometheus.yml passes promtool check config" promtool check config "$tmp/prometheus.yml"
check "Kubernetes ConfigMap config passes --config.check" "$bin" --config.check --config.file="$tmp/k8s-config.yml"
check "hashmod sharding snippet passes promtool check config" promtool check config "$tmp/hashmod.yml"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
