//! Config helpers for the tests; the PKI, the fake SMTP server, the exposition parser and
//! the HTTP client are in the `testkit` crate.

use smtp_exporter::config::{self, ProbeSpec};

/// Builds the single probe spec of a config that has one module (given as YAML lines
/// indented under the module name) and one target on 127.0.0.1:`port`.
pub fn spec(module_yaml: &str, port: u16) -> ProbeSpec {
    spec_expecting(module_yaml, port, "{}")
}

/// Like [`spec`], with the target's `expect` block given as a YAML flow mapping.
pub fn spec_expecting(module_yaml: &str, port: u16, expect: &str) -> ProbeSpec {
    let module: String = module_yaml.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "modules:\n  m:\n{module}targets:\n  - name: fake\n    host: 127.0.0.1\n    ports: [{{ port: {port}, module: m }}]\n    expect: {expect}\n"
    );
    let config = config::parse(&yaml, "test config").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    config.schedule.first().expect("one spec").spec.clone()
}
