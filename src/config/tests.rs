//! The configuration's unit tests: error tables, spellings, paths, the shipped example.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

fn error_of(yaml: &str) -> String {
    parse(yaml, "test.yml").unwrap_err().to_string()
}

const MODULES: &str = "modules:\n  relay:\n    tls: starttls\n";
/// A target for a module named `m`, so that a config has something to probe.
const TARGET_M: &str = "targets:\n  - host: mx.example.test\n    ports: [{ port: 465, module: m }]\n";

/// Issue 10 item 7: the spellings users write. Enum values in any case, and the SASL
/// names the metrics and `check` print (CRAM-MD5) beside the snake_case ones.
#[test]
fn enum_values_take_any_case_and_sasl_names() {
    for (tls, want) in [
        ("STARTTLS", TlsMode::Starttls),
        ("Implicit", TlsMode::Implicit),
        ("starttls_REQUIRED", TlsMode::StarttlsRequired),
    ] {
        let yaml = format!("modules:\n  m:\n    tls: {tls}\n    ip_protocol: IP4\n    tls_config: {{ on_invalid_cert: Report }}\n{TARGET_M}");
        let config = parse(&yaml, "t").unwrap_or_else(|e| panic!("{tls}: {e}"));
        assert_eq!(config.modules["m"].tls_mode(), want);
        assert_eq!(config.modules["m"].ip_protocol, IpProtocol::Ip4);
    }
    for (mechanism, want) in [
        ("CRAM-MD5", AuthMechanism::CramMd5),
        ("cram-md5", AuthMechanism::CramMd5),
        ("cram_md5", AuthMechanism::CramMd5),
        ("PLAIN", AuthMechanism::Plain),
        ("Login", AuthMechanism::Login),
    ] {
        let yaml = format!("modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, password: p, mechanism: {mechanism} }}\n{TARGET_M}");
        let config = parse(&yaml, "t").unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(config.modules["m"].auth.as_ref().unwrap().mechanism, Some(want));
    }
    assert_eq!(
        error_of("modules:\n  m:\n    tls: implicit\n    auth: { username: u, password: p, mechanism: DIGEST-MD5 }\n"),
        "test.yml: modules.m.auth.mechanism: unknown variant `DIGEST-MD5`, expected one of `plain`, `login`, `cram_md5`, `xoauth2` at line 4 column 50"
    );
}

/// Issue 10 item 6: relative paths in a config file are taken from the file's
/// directory, as Prometheus does, and errors name the path that was tried.
#[test]
fn relative_paths_are_taken_from_the_config_files_directory() {
    let dir = std::env::temp_dir().join(format!("smtp-exporter-relative-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/pw"), "from-the-config-dir\n").unwrap();
    let file = dir.join("config.yml");
    std::fs::write(
        &file,
        format!("modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, password_file: secrets/pw }}\n{TARGET_M}"),
    )
    .unwrap();
    let config = load(&file).unwrap();
    let auth = config.modules["m"].auth.as_ref().unwrap();
    assert_eq!(auth.credentials.secret, CredentialSource::Password(Secret::new("from-the-config-dir")));

    std::fs::write(
        &file,
        format!("modules:\n  m:\n    tls: implicit\n    tls_config: {{ ca_file: ca.pem }}\n{TARGET_M}"),
    )
    .unwrap();
    let err = load(&file).unwrap_err().to_string();
    let want = format!("modules.m.tls_config.ca_file {}: No such file", dir.join("ca.pem").display());
    assert!(err.contains(&want), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 10 item 9: a file with nothing to probe is an error, not a silent empty
/// exporter; modules with allowed hosts for /probe are something to probe.
#[test]
fn a_config_with_nothing_to_probe_is_rejected() {
    let nothing = "test.yml: nothing to probe: list servers under targets or mail domains under domains (see config/example.yml), or modules and probe_endpoint.allowed_hosts for /probe";
    for yaml in ["", "# only a comment\n", "modules:\n  m:\n    tls: implicit\n", "interval: 30s\n"] {
        assert_eq!(error_of(yaml), nothing, "for {yaml:?}");
    }
    let probe_only =
        "modules:\n  m:\n    tls: implicit\nprobe_endpoint: { allowed_hosts: [\"*.example.test\"] }\n";
    assert!(parse(probe_only, "t").is_ok());
    let disabled =
        "modules:\n  m:\n    tls: implicit\nprobe_endpoint: { enabled: false, allow_any_target: true }\n";
    assert_eq!(error_of(disabled), nothing);
}

/// Issue 10 item 4: a banner deadline that cuts off a postscreen MX on port 25 loads,
/// with a warning that says why; the shipped example has none.
#[test]
fn a_short_banner_deadline_on_port_25_is_warned_about() {
    let yaml = "modules:\n  relay:\n    tls: starttls\n    phase_timeout: 5s\ntargets:\n  - host: mx\n    ports: [{ port: 25, module: relay }, { port: 2525, module: relay }]\n";
    let config = parse(yaml, "t").unwrap();
    assert_eq!(
        config.warnings,
        vec!["modules.relay: a banner deadline of 5s is shorter than the 6 s a Postfix postscreen MX waits before the last line of its greeting; such a server on port 25 will look silent (raise phase_timeout and timeout)"]
    );
    let example = parse(include_str!("../../config/example.yml"), "config/example.yml").unwrap();
    assert!(example.warnings.is_empty(), "{:?}", example.warnings);
    assert!(embedded_default().warnings.is_empty());
}

#[test]
fn embedded_default_covers_the_four_ports() {
    let config = embedded_default();
    let ports: Vec<u16> = config.schedule.iter().map(|s| s.spec.port).collect();
    assert_eq!(ports, vec![25, 465, 587, 2525]);
    assert_eq!(config.schedule[1].spec.module.tls_mode(), TlsMode::Implicit);
}

/// Issue 10 item 9: the annotated example loads as it is, with no password file or
/// environment variable set up beforehand.
#[test]
fn example_config_is_valid() {
    let text = include_str!("../../config/example.yml");
    let config = parse(text, "config/example.yml").unwrap();
    let ports: HashSet<u16> = config.schedule.iter().map(|s| s.spec.port).collect();
    for p in [25, 465, 587, 2525] {
        assert!(ports.contains(&p), "example lacks port {p}");
    }
}

/// The simulation the sharding design promises: 4 shards over 10,000 specs, each spec
/// probed by exactly one shard, shard sizes within 5% of each other.
#[test]
fn four_shards_split_ten_thousand_specs_evenly() {
    let keys: Vec<SpecKey> = (0..2500)
        .flat_map(|i| {
            [25u16, 465, 587, 2525].map(|port| SpecKey {
                target: format!("mx{i}.example.test"),
                port,
                module: if port == 465 { "submissions".into() } else { "relay".into() },
                via: None,
            })
        })
        .collect();
    let shards: Vec<Shard> = (0..4).map(|i| Shard::parse(&format!("{i}/4")).unwrap()).collect();
    let mut sizes = [0usize; 4];
    for key in &keys {
        let owners: Vec<usize> = (0..4).filter(|&i| shards[i].owns(key)).collect();
        assert_eq!(owners.len(), 1, "{key:?} owned by {owners:?}");
        sizes[owners[0]] += 1;
    }
    let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    assert_eq!(sizes.iter().sum::<usize>(), 10_000);
    assert!((max - min) as f64 / max as f64 <= 0.05, "shard sizes {sizes:?}");
}

#[test]
fn shard_arguments() {
    assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
    assert_eq!(Shard::parse("smtp-exporter-3/4").unwrap(), Shard { index: 3, count: 4 });
    for bad in ["4/4", "1", "a/4", "1/0", "-1/4", "1/x"] {
        assert!(Shard::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    for bad in ["", "10", "s", "1x", "-1s", "0s", "1.5s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
}

/// Table: config text → exact error (the blackbox_exporter habit).
#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "targets: []\nbogus: 1\n",
            "test.yml: unknown field `bogus`, expected one of `interval`, `max_concurrency`, `modules`, `targets`, `domains`, `dns`, `probe_endpoint`, `history` at line 2 column 1",
        ),
        (
            &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 25, module: relay }}]\n    expect: {{ cert_names: [\"not a name\"] }}\n"),
            "test.yml: targets[0].expect.cert_names: \"not a name\" is not a valid DNS name or IP address",
        ),
        (
            &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 25, module: relay }}]\n    expect: {{ starttls: maybe }}\n"),
            "test.yml: targets[0].expect.starttls: invalid type: string \"maybe\", expected a boolean at line 7 column 25",
        ),
        (
            "modules:\n  relay:\n    tls: sometimes\n",
            "test.yml: modules.relay.tls: unknown variant `sometimes`, expected one of `none`, `starttls`, `starttls_required`, `implicit` at line 3 column 10",
        ),
        (
            &format!("{MODULES}targets:\n  - host: mx\n    ports:\n      - {{ port: 25, module: nope }}\n"),
            "test.yml: targets[0].ports[0].module: unknown module \"nope\" (defined: relay)",
        ),
        (
            &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 25, module: relay }}, {{ port: 25, module: relay }}]\n"),
            "test.yml: targets[0].ports[1]: \"mx\" already probes port 25 with module \"relay\"",
        ),
        (
            &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 0, module: relay }}]\n"),
            "test.yml: targets[0].ports[0].port: must be between 1 and 65535",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    timeout: 5s\n    phase_timeout: 6s\n",
            "test.yml: modules.m.phase_timeout: 6s exceeds the module timeout 5s",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    timeout: 90s\ntargets:\n  - host: mx\n    ports: [{ port: 465, module: m }]\n",
            "test.yml: targets[0].ports[0]: module \"m\" timeout 90s exceeds the probe interval 60s",
        ),
        (
            "modules:\n  m:\n    tls: none\n    auth: { username: u, password: p }\n",
            "test.yml: modules.m.auth: credentials would travel unencrypted with tls: none; use starttls_required or implicit, or set auth.allow_plaintext: true",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    auth: { username: u, password: p, password_env: X }\n",
            "test.yml: modules.m.auth.password: password, password_file and password_env are mutually exclusive",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    auth: { username: u, password_file: /nonexistent/pw }\n",
            "test.yml: modules.m.auth.password_file: /nonexistent/pw: No such file or directory (os error 2); write the account's password there (one line, mode 0600)",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    tls_config: { ca_file: /nonexistent/ca.pem }\n",
            "test.yml: modules.m.tls_config.ca_file /nonexistent/ca.pem: No such file or directory (os error 2)",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    tls_config: { insecure_skip_verify: true, on_invalid_cert: fail }\n",
            "test.yml: modules.m.tls_config: insecure_skip_verify and on_invalid_cert: fail are mutually exclusive",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    auth: { username: u, mechanism: xoauth2, password: p }\n",
            "test.yml: modules.m.auth.token_file: mechanism xoauth2 needs a token_file",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    auth: { username: u, token_file: /nonexistent/token }\n",
            "test.yml: modules.m.auth.token_file: /nonexistent/token: No such file or directory (os error 2)",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    auth: { username: u, token_file: /etc/hostname, password: p }\n",
            "test.yml: modules.m.auth.token_file: token_file and password, password_file or password_env are mutually exclusive",
        ),
        // Issue 17: a token goes with xoauth2 only.
        (
            "modules:\n  m:\n    tls: implicit\n    auth: { username: u, token_file: /etc/hostname, mechanism: plain }\n",
            "test.yml: modules.m.auth.mechanism: token_file goes with mechanism xoauth2",
        ),
        (
            "modules:\n  m:\n    tls: none\n    tls_config: { insecure_skip_verify: true }\n",
            "test.yml: modules.m.tls_config: set, but tls is none",
        ),
        (
            "interval: soon\n",
            "test.yml: interval: invalid duration \"soon\" (use e.g. 500ms, 10s, 1m30s)",
        ),
        (
            "max_concurrency: 0\n",
            "test.yml: max_concurrency: 0 is out of range (1 to 4096; each probe holds one socket)",
        ),
        // Issue 12 finding 2: values that passed the check and then panicked at start.
        (
            "max_concurrency: 2305843009213693952\n",
            "test.yml: max_concurrency: 2305843009213693952 is out of range (1 to 4096; each probe holds one socket)",
        ),
        (
            "interval: 5124095576030431h\n",
            "test.yml: interval: 18446744073709551600s is out of range (1s to 86400s)",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n    timeout: 5124095576030431h\n",
            "test.yml: modules.m.timeout: 18446744073709551600s is out of range (100ms to 600s)",
        ),
        // Issue 12 finding 7: accepted silently before.
        (
            "interval: 1ms\n",
            "test.yml: interval: 1ms is out of range (1s to 86400s)",
        ),
        (
            "modules:\n  m:\n    tls: implicit\n  m:\n    tls: none\n",
            "test.yml: modules: \"m\" is defined twice at line 2 column 3",
        ),
        // Issue 17: what a map of unique names expected, when it is given a list.
        (
            "modules: [m]\n",
            "test.yml: modules: invalid type: sequence, expected a map with unique names at line 1 column 10",
        ),
        (
            "modules:\n  m:\n    tls: implicit\ntargets:\n  - host: \"bad host!\"\n    ports: [{ port: 465, module: m }]\n",
            "test.yml: targets[0].ports[0]: \"bad host!\" is not a valid TLS server name; set tls_config.server_name in module \"m\"",
        ),
        (
            "targets:\n  - host: mx\n    ports:\n      - { port: 70000, module: relay }\n",
            "test.yml: targets[0].ports[0].port: invalid value: integer `70000`, expected u16 at line 4 column 17",
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(&error_of(yaml), want, "for config:\n{yaml}");
    }
}

#[test]
fn password_file_trailing_newline_is_dropped_and_secret_is_redacted() {
    let pw = crate::test_support::temp_file("config-pw", "s3cret-value\n");
    let yaml = format!(
        "modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, password_file: {} }}\n{TARGET_M}",
        pw.display()
    );
    let config = parse(&yaml, "t").unwrap();
    let auth = config.modules["m"].auth.as_ref().unwrap();
    assert_eq!(auth.credentials.secret, CredentialSource::Password(Secret::new("s3cret-value")));
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "secret leaked in Debug: {debug}");
    assert!(debug.contains("<redacted>"));
}

/// Every shard lets `/probe` reach every configured host, and use a module with
/// credentials exactly where the whole configuration does, whichever shard probes it.
#[test]
fn probe_places_hold_on_every_shard() {
    let mut yaml = String::from(
        "modules:\n  relay: { tls: starttls }\n  sub: { tls: starttls_required, auth: { username: u, password: p } }\ntargets:\n",
    );
    for i in 0..40 {
        yaml.push_str(&format!(
            "  - {{ host: MX{i}.example.test, ports: [{{ port: 25, module: relay }}, {{ port: 587, module: sub }}] }}\n"
        ));
    }
    for index in 0..4 {
        let mut config = parse(&yaml, "t").unwrap();
        config.keep_shard(Shard { index, count: 4 });
        assert!(config.schedule.len() < 80, "the shard keeps a part of the specs");
        for i in 0..40 {
            let host = format!("mx{i}.example.test");
            assert!(config.probe_allowed(&host) && config.probe_allowed(&host.to_uppercase()), "{host}");
            assert!(config.on_demand_spec(&host, 587, "sub", None).is_ok(), "{host}:587");
            for (port, module) in [(25, "sub"), (2525, "sub")] {
                let refused = config.on_demand_spec(&host, port, module, None);
                assert!(matches!(refused, Err(OnDemandError::Credentials)), "{host}:{port} {module}");
            }
            assert!(config.on_demand_spec(&host, 2525, "relay", None).is_ok());
        }
        assert!(!config.probe_allowed("mx40.example.test"));
        assert!(!config.probe_allowed("example.test"));
    }
}

/// Each domain, and each host probed on every address, is walked by exactly one shard:
/// a domain's specs stay together, so that one replica can tell whether any MX accepts.
#[test]
fn every_domain_belongs_to_exactly_one_shard() {
    let mut yaml = String::from(
        "modules:\n  relay: { tls: starttls }\n  every: { tls: starttls, ip_protocol: both }\ntargets:\n  - { name: dual, host: dual.example.test, ports: [{ port: 25, module: every }] }\ndomains:\n",
    );
    for i in 0..200 {
        yaml.push_str(&format!(
            "  - {{ name: d{i}.example.test, ports: [{{ port: 25, module: relay }}] }}\n"
        ));
    }
    let all = parse(&yaml, "t").unwrap();
    assert_eq!(all.expansions.len(), 201);
    assert!(all.schedule.is_empty(), "a target whose only module is `both` has no static spec");
    let mut owners = std::collections::HashMap::new();
    for index in 0..3 {
        let mut config = parse(&yaml, "t").unwrap();
        config.keep_shard(Shard { index, count: 3 });
        assert!((30..=110).contains(&config.expansions.len()), "shard {index}: {}", config.expansions.len());
        for e in &config.expansions {
            assert!(owners.insert(e.name.clone(), index).is_none(), "{} on two shards", e.name);
        }
    }
    assert_eq!(owners.len(), 201);
}

/// Domain entries are checked like targets, with errors that name the field.
#[test]
fn domain_errors_name_the_field() {
    let base = "modules:\n  relay: { tls: starttls }\ndomains:\n";
    let cases = [
        ("  - { name: 'not a domain', ports: [{ port: 25, module: relay }] }\n", "domains[0].name: \"not a domain\" is not a domain name"),
        ("  - { name: 192.0.2.1, ports: [{ port: 25, module: relay }] }\n", "domains[0].name: \"192.0.2.1\" is not a domain name"),
        ("  - { name: a.test, ports: [] }\n", "domains[0].ports: must list at least one port"),
        ("  - { name: a.test, ports: [{ port: 25, module: nope }] }\n", "domains[0].ports[0].module: unknown module \"nope\" (defined: relay)"),
        ("  - { name: a.test, ip_protocol: auto, ports: [{ port: 25, module: relay }] }\n", "domains[0].ip_protocol: a domain walks every address; use both, ip4 or ip6"),
        ("  - { name: A.test., ports: [{ port: 25, module: relay }] }\n  - { name: a.test, ports: [{ port: 25, module: relay }] }\n", "domains[1].name: domain \"a.test\" is listed twice"),
    ];
    for (domains, want) in cases {
        let err = parse(&format!("{base}{domains}"), "test.yml").unwrap_err().to_string();
        assert_eq!(err, format!("test.yml: {want}"), "for {domains}");
    }
    let dns = [
        ("dns: { nameservers: [resolver.example] }\n", "dns.nameservers: \"resolver.example\" is not an IP address or ADDRESS:PORT ([v6]:PORT for IPv6); a name server is given by address"),
        ("dns: { attempts: 0 }\n", "dns.attempts: 0 is out of range (1 to 5)"),
        ("dns: { min_ttl: 2h, max_ttl: 1h }\n", "dns.min_ttl: 7200s exceeds max_ttl 3600s"),
        ("dns: { cache_size: 2000000 }\n", "dns.cache_size: 2000000 is out of range (0 to 1000000)"),
    ];
    for (section, want) in dns {
        let yaml = format!("{section}{base}  - {{ name: a.test, ports: [{{ port: 25, module: relay }}] }}\n");
        let err = parse(&yaml, "test.yml").unwrap_err().to_string();
        assert_eq!(err, format!("test.yml: {want}"), "for {section}");
    }
    let ok = parse(&format!("dns: {{ nameservers: [\"192.0.2.53\", \"[2001:db8::53]:5353\"] }}\n{base}  - {{ name: a.test, ports: [{{ port: 25, module: relay }}] }}\n"), "t").unwrap();
    assert_eq!(
        ok.dns.nameservers,
        vec!["192.0.2.53:53".parse().unwrap(), "[2001:db8::53]:5353".parse().unwrap()]
    );
    assert_eq!(ok.dns.cache_size, 8192, "the default cache holds 8,192 answers");
}

/// `dns.trust_anchors` (issue 14): a file of DNSKEY lines, taken from the config file's
/// directory; a missing file, or one without a DNSKEY, is an error naming the field and
/// the file. `policy.dane` is on unless turned off.
#[test]
fn trust_anchors_are_read_at_load_and_dane_is_on_by_default() {
    let dir = std::env::temp_dir().join(format!("smtp-exporter-anchors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let domains = "modules:\n  relay: { tls: starttls }\ndomains:\n  - { name: a.test, ports: [{ port: 25, module: relay }] }\n  - { name: b.test, ports: [{ port: 25, module: relay }], policy: { dane: false } }\n";
    let load =
        |anchors: &str| parse_in(&format!("dns: {{ trust_anchors: {anchors} }}\n{domains}"), "t.yml", &dir);
    let err = load("missing.key").unwrap_err().to_string();
    let missing = dir.join("missing.key");
    assert!(err.starts_with(&format!("t.yml: dns.trust_anchors: {}: ", missing.display())), "{err}");
    std::fs::write(dir.join("empty.key"), "; no key here\n").unwrap();
    let err = load("empty.key").unwrap_err().to_string();
    assert_eq!(
        err,
        format!("t.yml: dns.trust_anchors: {}: no DNSKEY record found", dir.join("empty.key").display())
    );
    let key = ". 3600 IN DNSKEY 257 3 13 jr8tBp4SfsYE27MEUzo1ZLYjix2dTbbohRlosIq1fs4Xo/eb2gh1I5SVhw3lBuYo1c/Zcb9LD+wqftKkSNSEBQ==\n";
    std::fs::write(dir.join("root.key"), key).unwrap();
    let config = load("root.key").unwrap();
    assert_eq!(config.dns.trust_anchors, Some(dir.join("root.key")));
    let dane: Vec<bool> =
        config.expansions.iter().map(|e| e.policy.as_ref().is_some_and(|p| p.dane)).collect();
    assert_eq!(dane, vec![true, false]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Who `/probe` may probe: a `*.` pattern matches names below it at a dot boundary only,
/// a plain entry only itself, and `allow_any_target` anything.
#[test]
fn probe_patterns_match_at_a_dot_boundary() {
    let base = "modules:\n  m: { tls: starttls }\nprobe_endpoint: { allowed_hosts: [\"*.example.com\", \"mx.example.net\"] }\n";
    let config = parse(base, "t").unwrap();
    for allowed in ["mx1.example.com", "a.b.example.com", "MX1.Example.COM", "mx.example.net"] {
        assert!(config.probe_allowed(allowed), "{allowed}");
    }
    for refused in
        ["evilexample.com", "example.com", "example.com.evil", "mx1.example.net", "xmx.example.net"]
    {
        assert!(!config.probe_allowed(refused), "{refused}");
    }
    let any = parse(&base.replace("allowed_hosts:", "allow_any_target: true, allowed_hosts:"), "t").unwrap();
    assert!(any.probe_allowed("evilexample.com") && any.probe_allowed("192.0.2.1"));
}

/// `history:` (issue 16): defaults 30 results and 10 failures, each at most 1,000.
#[test]
fn history_bounds_default_and_are_checked() {
    let base =
        "modules:\n  m: { tls: none }\ntargets:\n  - { host: 127.0.0.1, ports: [{ port: 25, module: m }] }\n";
    let config = parse(base, "t").unwrap();
    assert_eq!(config.history, crate::config::HistoryBounds { results: 30, failures: 10 });
    let config = parse(&format!("history: {{ results: 0, failures: 1000 }}\n{base}"), "t").unwrap();
    assert_eq!(config.history, crate::config::HistoryBounds { results: 0, failures: 1000 });
    let err = parse(&format!("history: {{ results: 1001 }}\n{base}"), "t.yml").unwrap_err().to_string();
    assert_eq!(err, "t.yml: history.results: 1001 is out of range (0 to 1000)");
    let err = parse(&format!("history: {{ failures: 5000 }}\n{base}"), "t.yml").unwrap_err().to_string();
    assert_eq!(err, "t.yml: history.failures: 5000 is out of range (0 to 1000)");
    assert!(parse(&format!("history: {{ keep: 3 }}\n{base}"), "t.yml").is_err(), "unknown keys are refused");
}

/// Issue 15, the envelope check's configuration: errors name the field; `{domain}` is
/// filled in for a domain's specs and refused for a target's and by `/probe`.
#[test]
fn envelope_errors_and_the_domain_placeholder() {
    let module = |envelope: &str| format!("modules:\n  m:\n    tls: starttls\n    envelope: {envelope}\n");
    let cases = [
        ("{ accept: [] }", "modules.m.envelope.accept: list at least one recipient under accept or reject"),
        ("{ accept: [postmaster] }", "modules.m.envelope.accept[0]: \"postmaster\" is not an address (local@domain, printable, no spaces or <>)"),
        ("{ reject: [\"a b@c\"] }", "modules.m.envelope.reject[0]: \"a b@c\" is not an address (local@domain, printable, no spaces or <>)"),
        ("{ mail_from: \"<x@y>\", accept: [a@b] }", "modules.m.envelope.mail_from: \"<x@y>\" is not an address (local@domain, printable, no spaces or <>)"),
        ("{ accept: [a@b], reject: [a@b] }", "modules.m.envelope.reject[0]: \"a@b\" is listed twice"),
        ("{ accept: [a@b], bcc: [c@d] }", "modules.m.envelope: unknown field `bcc`, expected one of `mail_from`, `accept`, `reject`"),
    ];
    for (envelope, want) in cases {
        let error = error_of(&format!("{}{TARGET_M}", module(envelope)));
        assert!(error.starts_with(&format!("test.yml: {want}")), "{envelope}: {error}");
    }
    let eleven: Vec<String> = (0..11).map(|i| format!("r{i}@x.example")).collect();
    let error = error_of(&format!("{}{TARGET_M}", module(&format!("{{ reject: [{}] }}", eleven.join(", ")))));
    assert_eq!(
        error,
        "test.yml: modules.m.envelope.reject: 11 recipients; at most 10 (each is a label value)"
    );
    let ten = module(&format!("{{ reject: [{}] }}", eleven[..10].join(", ")));
    assert!(parse(&format!("{ten}{TARGET_M}"), "t").is_ok());

    let postmaster = module("{ accept: [\"postmaster@{domain}\"] }");
    assert_eq!(
        error_of(&format!("{postmaster}{TARGET_M}")),
        "test.yml: targets[0].ports[0].module: module \"m\" puts {domain} in its envelope, which only a domains: entry gives; write the address out for a target"
    );
    let domains = format!("{postmaster}domains:\n  - name: example.test\n    ports: [{{ port: 25, module: m }}]\nprobe_endpoint: {{ allowed_hosts: [mx.example.test] }}\n");
    let config = parse(&domains, "t").unwrap();
    let envelope = config.modules["m"].envelope.as_ref().unwrap();
    assert!(envelope.uses_domain());
    assert_eq!(envelope.mail_from, "", "the null sender by default");
    assert_eq!(envelope.recipients[0].expect, EnvelopeExpect::Accept);
    assert_eq!(
        config.on_demand_spec("mx.example.test", 25, "m", None).unwrap_err(),
        OnDemandError::EnvelopeDomain
    );
    let written_out = module("{ accept: [postmaster@example.test] }");
    assert!(!parse(&format!("{written_out}{TARGET_M}"), "t").unwrap().modules["m"]
        .envelope
        .as_ref()
        .unwrap()
        .uses_domain());
}

/// Issue 15, the delivery module's configuration: its defaults, and errors that name the
/// field for each rule (pacing against the timeout, no plain IMAP, no opportunistic
/// STARTTLS for the message, no domains, no `both`, not by `/probe`).
#[test]
fn delivery_defaults_and_errors() {
    let module = |extra: &str, delivery: &str, imap: &str| {
        format!(
            "modules:\n  d:\n    tls: starttls_required\n{extra}    delivery:\n      mail_from: monitor@example.test\n      rcpt_to: inbox@example.test\n{delivery}      imap: {{ username: inbox, password: p{imap} }}\n"
        )
    };
    let target = "targets:\n  - host: mx.example.test\n    ports: [{ port: 587, module: d }]\n";
    let ok = |yaml: &str| parse(yaml, "t").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let config = ok(&format!("{}{target}", module("", "", ", tls: implicit")));
    let d = config.modules["d"].delivery.as_ref().unwrap();
    assert_eq!(config.modules["d"].timeout, Duration::from_secs(60), "a delivery module's default timeout");
    assert_eq!(
        (d.interval, d.poll_interval, d.sweep_after),
        (Duration::from_secs(300), Duration::from_secs(2), Duration::from_secs(3600))
    );
    assert!(d.require_inbox);
    assert_eq!(
        (d.imap.port, d.imap.transport.mode(), d.imap.host.as_deref()),
        (993, TlsMode::Implicit, None)
    );
    assert_eq!(config.schedule[0].interval, Duration::from_secs(300), "the spec runs on delivery.interval");
    let starttls = ok(&format!("{}{target}", module("", "", ", tls: starttls")));
    let imap = &starttls.modules["d"].delivery.as_ref().unwrap().imap;
    assert_eq!((imap.port, imap.transport.mode()), (143, TlsMode::StarttlsRequired));
    assert_eq!(
        starttls.on_demand_spec("mx.example.test", 587, "d", None).unwrap_err(),
        OnDemandError::Delivery
    );

    let cases = [
        (module("", "", ", tls: none"), "modules.d.delivery.imap.tls: unknown variant `none`, expected `implicit` or `starttls`"),
        (module("", "      interval: 5s\n", ", tls: implicit"), "modules.d.delivery.interval: 5s is out of range (10s to 86400s)"),
        (module("    timeout: 2m\n", "      interval: 1m\n", ", tls: implicit"), "modules.d.delivery.interval: 60s is shorter than the module timeout 120s"),
        (module("    timeout: 30s\n", "      sweep_after: 10s\n", ", tls: implicit"), "modules.d.delivery.sweep_after: 10s is out of range (30s to 2592000s) (at least the module timeout, so that no probe still waiting loses its message)"),
        (module("", "      poll_interval: 100ms\n", ", tls: implicit"), "modules.d.delivery.poll_interval: 100ms is out of range (200ms to 60s)"),
        (module("", "", ", tls: implicit, port: 0"), "modules.d.delivery.imap.port: must be between 1 and 65535"),
        (module("", "", ", tls: implicit, junk_mailbox: \"\""), "modules.d.delivery.imap.junk_mailbox: must be a mailbox name"),
        (module("", "", ", tls: implicit, host: \" \""), "modules.d.delivery.imap.host: must not be empty (leave it out to use the target's host)"),
        (module("", "", ", tls: implicit, password_env: X"), "modules.d.delivery.imap.password: password, password_file and password_env are mutually exclusive"),
        (module("", "", ", tls: implicit").replace("tls: starttls_required", "tls: starttls"), "modules.d.delivery: tls: starttls may send the message in plain text; use starttls_required or implicit (or none, to say so)"),
        (module("", "", ", tls: implicit").replace("rcpt_to: inbox@example.test", "rcpt_to: inbox"), "modules.d.delivery.rcpt_to: \"inbox\" is not an address (local@domain, printable, no spaces or <>)"),
    ];
    for (yaml, want) in cases {
        let error = error_of(&format!("{yaml}{target}"));
        assert!(error.starts_with(&format!("test.yml: {want}")), "{error}\nwanted: {want}");
    }
    let no_password = module("", "", ", tls: implicit").replace(", password: p", "");
    assert!(error_of(&format!("{no_password}{target}")).starts_with(
        "test.yml: modules.d.delivery.imap.password: one of password, password_file or password_env is required"
    ));
    let domain = format!(
        "{}domains:\n  - name: example.test\n    ports: [{{ port: 25, module: d }}]\n",
        module("", "", ", tls: implicit")
    );
    assert!(
        error_of(&domain)
            .starts_with("test.yml: domains[0].ports[0].module: module \"d\" delivers a message"),
        "{}",
        error_of(&domain)
    );
    let both = format!("{}{target}", module("    ip_protocol: both\n", "", ", tls: implicit"));
    assert!(
        error_of(&both).starts_with(
            "test.yml: targets[0].ports[0].module: module \"d\" delivers a message; ip_protocol: both"
        ),
        "{}",
        error_of(&both)
    );
}

/// Issue 17: a scrape's timeout shortens an on-demand probe's deadlines, and never
/// lengthens them past what the module allows.
#[test]
fn a_scrape_timeout_only_ever_shortens_the_module_timeout() {
    let yaml = "modules:\n  m:\n    tls: implicit\n    timeout: 10s\n    phase_timeout: 4s\ntargets:\n  - host: mx.example.test\n    ports: [{ port: 465, module: m }]\n";
    let config = parse(yaml, "t").unwrap();
    let deadlines = |timeout| {
        let spec = config.on_demand_spec("mx.example.test", 465, "m", timeout).unwrap();
        (spec.module.timeout, spec.module.phase_timeout)
    };
    let s = Duration::from_secs;
    assert_eq!(deadlines(None), (s(10), s(4)));
    assert_eq!(deadlines(Some(s(30))), (s(10), s(4)), "a longer scrape timeout is not taken");
    assert_eq!(deadlines(Some(s(6))), (s(6), s(4)));
    assert_eq!(deadlines(Some(s(2))), (s(2), s(2)), "the phase deadline fits in the shorter one");
    assert_eq!(config.modules["m"].timeout, s(10), "the configured module is left as it was");
}

/// Issue 17: `/config` replaces a secret at any depth of the YAML, inside lists and tagged
/// values too, not only in the mappings the configuration has today.
#[test]
fn secrets_are_replaced_inside_lists_and_tagged_values() {
    let page = shown("a:\n  - password: in-a-list\n  - [{ password: in-a-nested-list }]\nb: !tag { password: in-a-tag }\nc: { password_file: /run/pw }\n");
    for secret in ["in-a-list", "in-a-nested-list", "in-a-tag"] {
        assert!(!page.contains(secret), "{secret} shown:\n{page}");
    }
    assert_eq!(page.matches("<secret>").count(), 3, "{page}");
    assert!(page.contains("password_file: /run/pw"), "{page}");
}

/// Issue 17: durations are written back in the config's own grammar: whole seconds as
/// `Ns`, anything with milliseconds (or zero) as `Nms`, and what is written parses back.
#[test]
fn durations_are_written_as_the_config_writes_them() {
    for (millis, text) in [(0, "0ms"), (250, "250ms"), (1500, "1500ms"), (2000, "2s"), (90_000, "90s")] {
        let d = Duration::from_millis(millis);
        assert_eq!(format_duration(d), text);
        if millis > 0 {
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}

/// Issue 17: which shard owns a spec never changes between releases: replicas of a
/// sharded fleet upgraded one at a time must still split the specs between them, none
/// probed twice and none dropped. These owners were computed at the commit that added
/// this test; a change of the hash breaks it on purpose.
#[test]
fn shard_owners_are_stable_across_releases() {
    let shards: Vec<Shard> = (0..4).map(|i| Shard::parse(&format!("{i}/4")).unwrap()).collect();
    let owners: Vec<usize> = (0..16)
        .map(|i| {
            let key = SpecKey {
                target: format!("mx{i}.example.test"),
                port: 25,
                module: "relay".into(),
                via: None,
            };
            (0..4).find(|&s| shards[s].owns(&key)).unwrap()
        })
        .collect();
    assert_eq!(owners, [3, 2, 0, 0, 1, 2, 2, 2, 1, 0, 3, 0, 0, 1, 0, 0]);
}

/// Issue 17: `ehlo_metrics` takes a name or a boolean, and says so when given anything
/// else.
#[test]
fn ehlo_metrics_take_a_name_or_a_boolean() {
    for (value, want) in [
        ("all", EhloMetrics::All),
        ("offered", EhloMetrics::Offered),
        ("none", EhloMetrics::None),
        ("true", EhloMetrics::All),
        ("false", EhloMetrics::None),
    ] {
        let yaml = format!("modules:\n  m: {{ tls: implicit, ehlo_metrics: {value} }}\n{TARGET_M}");
        assert_eq!(parse(&yaml, "t").unwrap().modules["m"].ehlo_metrics, want, "{value}");
    }
    let err = error_of(&format!("modules:\n  m: {{ tls: implicit, ehlo_metrics: 5 }}\n{TARGET_M}"));
    assert!(err.contains("expected one of all, offered, none, or true / false"), "{err}");
}

/// Issue 17: the bounds of `dns:`, `policy.interval` and `probe_endpoint.allowed_hosts`
/// hold at their edges: equal TTL bounds and the largest cache are accepted, a week is the
/// longest policy interval, and a host pattern with a space in it is refused.
#[test]
fn dns_policy_and_endpoint_bounds_hold_at_their_edges() {
    let dns = |fields: &str| {
        format!("dns: {{ {fields} }}\n{MODULES}targets:\n  - {{ host: mx.example.test, ports: [{{ port: 25, module: relay }}] }}\n")
    };
    let config = parse(&dns("min_ttl: 30s, max_ttl: 30s, cache_size: 1000000"), "t").unwrap();
    assert_eq!(
        (config.dns.min_ttl, config.dns.max_ttl, config.dns.cache_size),
        (Duration::from_secs(30), Duration::from_secs(30), 1_000_000)
    );
    assert_eq!(parse(&dns("cache_size: 0"), "t").unwrap().dns.cache_size, 0);
    assert_eq!(
        error_of(&dns("cache_size: 1000001")),
        "test.yml: dns.cache_size: 1000001 is out of range (0 to 1000000)"
    );
    assert!(error_of(&dns("min_ttl: 31s, max_ttl: 30s")).contains("min_ttl: 31s exceeds max_ttl 30s"));
    // A week is the longest TTL either bound takes.
    let week = parse(&dns("min_ttl: 168h, max_ttl: 168h"), "t").unwrap();
    assert_eq!(
        (week.dns.min_ttl, week.dns.max_ttl),
        (Duration::from_secs(604_800), Duration::from_secs(604_800))
    );
    assert_eq!(
        error_of(&dns("max_ttl: 604801s")),
        "test.yml: dns.max_ttl: 604801s is out of range (1s to 604800s)"
    );

    let policy = |interval: &str| {
        format!("{MODULES}domains:\n  - {{ name: example.test, ports: [{{ port: 25, module: relay }}], policy: {{ interval: {interval} }} }}\n")
    };
    let config = parse(&policy("168h"), "t").unwrap();
    assert_eq!(config.expansions[0].policy.as_ref().unwrap().interval, Duration::from_secs(7 * 24 * 3600));
    assert!(error_of(&policy("169h")).contains("policy.interval"), "{}", error_of(&policy("169h")));

    let endpoint = |host: &str| format!("{MODULES}probe_endpoint: {{ allowed_hosts: [\"{host}\"] }}\n");
    assert!(parse(&endpoint("*.example.test"), "t").is_ok());
    for bad in ["mx example.test", "mx.example.test\t", " "] {
        assert_eq!(
            error_of(&endpoint(bad)),
            format!("test.yml: probe_endpoint.allowed_hosts: {bad:?} is not a host name or pattern")
        );
    }
}

/// Issue 17: an EHLO name of 255 characters and a delivery interval equal to the module's
/// timeout are accepted; one more is refused.
#[test]
fn ehlo_name_and_delivery_interval_bounds_are_inclusive() {
    let name = |len: usize| {
        format!("modules:\n  m: {{ tls: implicit, ehlo_hostname: {} }}\n{TARGET_M}", "a".repeat(len))
    };
    assert_eq!(parse(&name(255), "t").unwrap().modules["m"].ehlo_hostname.len(), 255);
    assert!(parse(&name(256), "t").is_err());
    // A space (white but not a control) and a BEL (a control but not white) are refused.
    for bad in ["\"a b\"", "\"a\\x07b\""] {
        let yaml = format!("modules:\n  m: {{ tls: implicit, ehlo_hostname: {bad} }}\n{TARGET_M}");
        assert!(error_of(&yaml).contains("is not a valid host name"), "{bad}: {}", error_of(&yaml));
    }
    let delivery = |interval: &str| {
        format!("modules:\n  m:\n    tls: implicit\n    timeout: 30s\n    delivery: {{ mail_from: a@example.test, rcpt_to: b@example.test, interval: {interval}, imap: {{ tls: implicit, username: u, password: p }} }}\n{TARGET_M}")
    };
    assert_eq!(
        parse(&delivery("30s"), "t").unwrap().modules["m"].delivery.as_ref().unwrap().interval,
        Duration::from_secs(30)
    );
    assert!(error_of(&delivery("29s")).contains("interval: 29s is shorter than the module timeout 30s"));
}

/// Issue 17: an envelope address is `local@domain` with both parts, printable, without
/// spaces or angle brackets; `tls_config` on a plain-text module is refused whichever
/// field is set.
#[test]
fn addresses_and_plain_text_tls_config_are_refused_exactly() {
    let module = |envelope: &str| {
        format!("modules:\n  m:\n    tls: starttls\n    envelope: {{ accept: [\"{envelope}\"] }}\n{TARGET_M}")
    };
    for bad in [
        "@example.test",
        "postmaster@",
        // YAML escapes: a BEL and a tab.
        "a\\x07b@example.test",
        "a\\tb@example.test",
        "a>b@example.test",
        "<ab@example.test",
    ] {
        let error = error_of(&module(bad));
        assert!(
            error.ends_with("is not an address (local@domain, printable, no spaces or <>)"),
            "{bad:?}: {error}"
        );
    }
    assert!(parse(&module("postmaster@example.test"), "t").is_ok());
    // At most 254 characters.
    let long = |len: usize| format!("{}@example.test", "a".repeat(len - "@example.test".len()));
    assert!(parse(&module(&long(254)), "t").is_ok());
    assert!(error_of(&module(&long(255)))
        .ends_with("is not an address (local@domain, printable, no spaces or <>)"));
    for field in [
        "ca_file: /etc/ssl/ca.pem",
        "server_name: mx.example.test",
        "insecure_skip_verify: true",
        "system_roots: true",
        "on_invalid_cert: report",
    ] {
        let yaml = format!("modules:\n  m: {{ tls: none, tls_config: {{ {field} }} }}\n{TARGET_M}");
        assert_eq!(error_of(&yaml), "test.yml: modules.m.tls_config: set, but tls is none", "{field}");
    }
}

/// Issue 17: a `token_file` makes the mechanism xoauth2, whether the module names it or
/// not; another mechanism beside it is refused (in the error table above).
#[test]
fn a_token_file_goes_with_xoauth2_named_or_not() {
    let token = crate::test_support::temp_file("token", "ya29.token\n");
    for mechanism in ["", ", mechanism: xoauth2"] {
        let yaml = format!(
            "modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, token_file: {}{mechanism} }}\n{TARGET_M}",
            token.display()
        );
        let config = parse(&yaml, "t").unwrap();
        let auth = config.modules["m"].auth.as_ref().unwrap();
        assert_eq!(auth.mechanism, Some(AuthMechanism::Xoauth2), "{mechanism:?}");
    }
}
