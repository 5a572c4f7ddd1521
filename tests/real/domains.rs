//! Mail domains against a real authoritative name server (knot, started by mta.sh with the
//! zone mail.test) and the real Postfix, which listens on 127.0.0.1 and ::1: the MX walk,
//! both families, CNAME'd and address-less MX hosts, implicit and null MX, NXDOMAIN, a
//! zone change followed within its TTL, `check DOMAIN`, and a name server that does not
//! answer.

use super::*;

/// The exporter's configuration for the test zone's domains.
fn domains_config(mta: &Mta) -> String {
    let (relay, dns) = (mta.get("RELAY_PORT"), mta.get("DNS_PORT"));
    let domains: String = ["two", "implicit", "null", "noaddr", "nx"]
        .iter()
        .map(|d| format!("  - name: {d}.mail.test\n    ports: [{{ port: {relay}, module: relay }}]\n"))
        .collect();
    // knot serves a root of its own: its key is the trust anchor, or every answer is bogus.
    format!(
        "interval: 2s\ndns:\n  nameservers: [\"127.0.0.1:{dns}\"]\n  timeout: 500ms\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\nmodules:\n  relay: {{ tls: starttls, timeout: 2s }}\ndomains:\n{domains}",
        mta.get("DNS_TRUST_ANCHORS")
    )
}

/// Scrapes until `ready` holds, at most `within`.
pub(super) fn scrape_until(
    exporter: &Exporter,
    within: Duration,
    what: &str,
    ready: impl Fn(&[Sample]) -> bool,
) -> Result<Vec<Sample>, String> {
    let deadline = Instant::now() + within;
    loop {
        // Until it listens, a scrape fails; that is "not yet" too.
        let last = exporter.exposition().map(|text| parse_exposition(&text));
        if let Ok(samples) = &last {
            if ready(samples) {
                return last;
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {within:?} (last scrape: {:?})", last.err()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rewrites the zone file with `edit` applied and a higher serial, and has knot reload it.
fn change_zone(mta: &Mta, serial: u32, edit: impl Fn(&str) -> String) -> Check {
    let path = mta.get("DNS_ZONE_FILE");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let text = edit(&text);
    let soa = text.lines().find(|l| l.contains(" SOA ")).ok_or("no SOA line")?.to_owned();
    let fields: Vec<&str> = soa.split_whitespace().collect();
    let new_soa = soa.replacen(&format!(" {} ", fields[4]), &format!(" {serial} "), 1);
    std::fs::write(path, text.replace(&soa, &new_soa)).map_err(|e| e.to_string())?;
    run("knotc", &["-c", mta.get("KNOT_CONF"), "zone-reload", "mail.test"]).map(|_| ())
}

pub(super) fn domains_with_a_real_name_server(mta: &Mta) -> Check {
    let path = mta.state_dir.join("domains.yml");
    std::fs::write(&path, domains_config(mta)).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let two = [("target", "two.mail.test")];
    let samples = scrape_until(&exporter, Duration::from_secs(20), "every MX address probed", |s| {
        find(s, "smtp_probe_success", &two).len() == 3
            && find(s, "smtp_domain_deliverable", &[]).len() == 5
            && !find(s, "smtp_probe_success", &[("target", "implicit.mail.test")]).is_empty()
    })?;
    let success = |mx: &str, address: &str| {
        one(&samples, "smtp_probe_success", &[("target", "two.mail.test"), ("mx", mx), ("address", address)])
            .map(|s| s.value)
    };
    // mx1 over both families reaches the real Postfix; the CNAME'd mx2 has nothing listening.
    let got = (
        success("mx1.mail.test", "127.0.0.1")?,
        success("mx1.mail.test", "::1")?,
        success("mx2.mail.test", "127.0.0.2")?,
    );
    if got != (1.0, 1.0, 0.0) {
        return Err(format!("mx1 ip4, mx1 ip6, mx2: {got:?}"));
    }
    let domain = |name: &str, family: &str| one(&samples, family, &[("domain", name)]).map(|s| s.value);
    let expect = [
        ("two.mail.test", "smtp_domain_mx_hosts", 2.0),
        ("two.mail.test", "smtp_domain_deliverable", 1.0),
        ("two.mail.test", "smtp_domain_primary_deliverable", 1.0),
        ("implicit.mail.test", "smtp_domain_implicit_mx", 1.0),
        ("implicit.mail.test", "smtp_domain_deliverable", 1.0),
        ("null.mail.test", "smtp_domain_null_mx", 1.0),
        ("null.mail.test", "smtp_domain_dns_success", 1.0),
        ("null.mail.test", "smtp_domain_deliverable", 0.0),
        ("noaddr.mail.test", "smtp_domain_deliverable", 0.0),
        ("nx.mail.test", "smtp_domain_deliverable", 0.0),
    ];
    for (name, family, want) in expect {
        let got = domain(name, family)?;
        if got != want {
            return Err(format!("{family}{{domain={name}}} is {got}, want {want}"));
        }
    }
    for (name, reason) in [("nx.mail.test", "nxdomain"), ("noaddr.mail.test", "no_records")] {
        one(&samples, "smtp_domain_dns_failure_info", &[("domain", name), ("reason", reason)])?;
    }
    let lookups = find(&samples, "smtp_domain_dns_lookup_seconds", &[("domain", "two.mail.test")]).len();
    // The exporter's own check of the metric names.
    promtool_check_metrics(&exporter.exposition()?)?;

    // The status page in a real browser: the domains first, the undeliverable ones on top.
    let mut browser = Browser::start(1200, 900)?;
    browser.open(&format!("http://{}/", exporter.addr))?;
    let rows = browser.eval(
        "[...document.querySelectorAll('tr.domain')].map(r => [r.dataset.domain, r.dataset.deliverable])",
    )?;
    let want = serde_json::json!([
        ["noaddr.mail.test", "0"],
        ["nx.mail.test", "0"],
        ["implicit.mail.test", "1"],
        ["null.mail.test", "0"],
        ["two.mail.test", "1"]
    ]);
    if rows != want {
        return Err(format!("domain rows in Chromium: {rows}"));
    }
    let mx = browser.eval("document.querySelector('tr.domain[data-domain=\"two.mail.test\"]').innerText")?;
    if !mx.as_str().is_some_and(|t| t.contains("10: mx1.mail.test (ip4 ip6); 20: mx2.mail.test (fails)")) {
        return Err(format!("two.mail.test's row: {mx}"));
    }
    drop(browser);

    // The zone changes: mx2 leaves. Within its 2 s TTL (and a probe), its series vanish.
    let changed = Instant::now();
    change_zone(mta, 2, |zone| zone.replace("two       MX   20 mx2\n", ""))?;
    // TTL 2 s, then the walk and a scrape: 4 s is the bound.
    let result = scrape_until(
        &exporter,
        Duration::from_secs(4),
        "mx2 dropped within the TTL after the zone change",
        |s| {
            find(s, "smtp_probe_success", &two).len() == 2
                && find(s, "smtp_domain_mx_info", &[("domain", "two.mail.test")]).len() == 1
        },
    );
    let followed_in = changed.elapsed();
    change_zone(mta, 3, |zone| {
        zone.replace("two       MX   10 mx1\n", "two       MX   10 mx1\ntwo       MX   20 mx2\n")
    })?;
    result?;

    // check DOMAIN against the same name server, and against one that never answers.
    let bin = env!("CARGO_BIN_EXE_smtp_exporter");
    let dns = format!("127.0.0.1:{}", mta.get("DNS_PORT"));
    let port = format!("{}:starttls", mta.get("RELAY_PORT"));
    let anchors = mta.get("DNS_TRUST_ANCHORS");
    let table = run(
        bin,
        &["check", "two.mail.test", "--dns-server", &dns, "--dns-trust-anchors", anchors, "--port", &port],
    )?;
    if !table.contains("mail to two.mail.test is delivered via mx1.mail.test: mx2.mail.test refuses.") {
        return Err(format!("check's verdict:\n{table}"));
    }
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let silent = silent.local_addr().map_err(|e| e.to_string())?.to_string();
    let out = Command::new(bin)
        .args(["check", "two.mail.test", "--mx", "--dns-server", &silent, "--port", &port, "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {out:?}"))?;
    if json["dns_failure"] != "timeout" || out.status.code() != Some(1) {
        return Err(format!("a silent name server: {json} (exit {:?})", out.status.code()));
    }
    println!(
        "    knot zone mail.test: 5 domains, {lookups} DNS queries in two.mail.test's walk; a removed MX gone from /metrics in {:.1} s (TTL 2 s); a silent name server is a timeout",
        followed_in.as_secs_f64()
    );
    Ok(())
}

/// MTA-STS and TLS-RPT against the real thing: knot serves the records, nginx the policies
/// (with a certificate from the test CA), Postfix presents a certificate for mx1.mail.test.
pub(super) fn mta_sts_with_nginx_and_knot(mta: &Mta) -> Check {
    let (relay, dns, https) = (mta.get("RELAY_PORT"), mta.get("DNS_PORT"), mta.get("MTA_STS_PORT"));
    let cases =
        ["two", "sts-missing", "sts-testing", "sts-404", "sts-redirect", "sts-big", "sts-ctype", "implicit"];
    let domains: String = cases
        .iter()
        .map(|d| {
            format!("  - name: {d}.mail.test\n    ports: [{{ port: {relay}, module: relay }}]\n    policy: {{ interval: 2s, timeout: 3s, https_port: {https} }}\n")
        })
        .collect();
    let yaml = format!(
        "interval: 2s\ndns:\n  nameservers: [\"127.0.0.1:{dns}\"]\n  timeout: 500ms\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\nmodules:\n  relay: {{ tls: starttls, timeout: 2s, tls_config: {{ ca_file: \"{}\" }} }}\ndomains:\n{domains}",
        mta.get("DNS_TRUST_ANCHORS"),
        mta.get("CA_FILE")
    );
    let path = mta.state_dir.join("mta-sts.yml");
    std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let samples = scrape_until(&exporter, Duration::from_secs(20), "every policy checked", |s| {
        find(s, "smtp_domain_mta_sts_success", &[]).len() == cases.len()
            && find(
                s,
                "smtp_domain_mta_sts_mx_compliant",
                &[("domain", "two.mail.test"), ("mx", "mx1.mail.test")],
            )
            .first()
            .is_some_and(|x| x.value == 1.0)
            && find(s, "smtp_domain_mta_sts_mx_compliant", &[("domain", "sts-testing.mail.test")])
                .first()
                .is_some_and(|x| x.value == 1.0)
    })?;
    let get = |family: &str, domain: &str, extra: &[(&str, &str)]| {
        let domain = format!("{domain}.mail.test");
        let mut labels = vec![("domain", domain.as_str())];
        labels.extend_from_slice(extra);
        one(&samples, family, &labels).map(|s| s.value)
    };
    let expect = [
        ("smtp_domain_mta_sts_success", "two", vec![], 1.0),
        ("smtp_domain_mta_sts_mode_info", "two", vec![("mode", "enforce")], 1.0),
        ("smtp_domain_mta_sts_mx_compliant", "two", vec![("mx", "mx2.mail.test")], 0.0),
        ("smtp_domain_mta_sts_mx_covered", "two", vec![("mx", "mx2.mail.test")], 1.0),
        ("smtp_domain_tlsrpt_valid", "two", vec![], 1.0),
        ("smtp_domain_mta_sts_mx_covered", "sts-missing", vec![("mx", "mx1.mail.test")], 0.0),
        ("smtp_domain_mta_sts_mx_compliant", "sts-missing", vec![("mx", "mx1.mail.test")], 0.0),
        ("smtp_domain_mta_sts_mode_info", "sts-testing", vec![("mode", "testing")], 1.0),
        ("smtp_domain_tlsrpt_failure_info", "sts-testing", vec![("reason", "malformed")], 1.0),
        ("smtp_domain_mta_sts_failure_info", "sts-404", vec![("reason", "https_status")], 1.0),
        ("smtp_domain_mta_sts_failure_info", "sts-redirect", vec![("reason", "https_redirect")], 1.0),
        ("smtp_domain_mta_sts_failure_info", "sts-big", vec![("reason", "https_too_large")], 1.0),
        ("smtp_domain_mta_sts_failure_info", "sts-ctype", vec![("reason", "https_content_type")], 1.0),
        ("smtp_domain_mta_sts_failure_info", "implicit", vec![("reason", "no_txt")], 1.0),
    ];
    for (family, domain, extra, want) in expect {
        let got = get(family, domain, &extra)?;
        if got != want {
            return Err(format!("{family}{{domain={domain}.mail.test,{extra:?}}} is {got}, want {want}"));
        }
    }
    promtool_check_metrics(&exporter.exposition()?)?;
    // check DOMAIN says the same in words.
    let bin = env!("CARGO_BIN_EXE_smtp_exporter");
    let port = format!("{relay}:starttls");
    let dns_server = format!("127.0.0.1:{dns}");
    let check = |domain: &str| {
        let anchors = mta.get("DNS_TRUST_ANCHORS");
        let args = [
            "check",
            domain,
            "--dns-server",
            &dns_server,
            "--dns-trust-anchors",
            anchors,
            "--port",
            &port,
            "--ca-file",
            mta.get("CA_FILE"),
        ];
        run(bin, &args)
    };
    let expected = [
        ("two.mail.test", "MTA-STS: enforce, id 1, max_age 604800 s; mx1.mail.test complies; mx2.mail.test has no certificate valid for its name — MTA-STS senders will not deliver to it"),
        ("two.mail.test", "TLS-RPT: reports go to mailto:tls-reports@mail.test"),
        ("sts-missing.mail.test", "mx1.mail.test is NOT covered by the policy — MTA-STS senders will not deliver to it"),
    ];
    check_says(check, &expected)?;
    println!("    nginx + knot: enforce/compliant, a covered MX with nothing listening, an MX missing from the policy, testing, 404, redirect, 70 KB, text/html, no TXT; TLS-RPT valid and malformed");
    Ok(())
}

/// A family, a domain, the other labels, and the value wanted.
type Expected = (&'static str, &'static str, Vec<(&'static str, &'static str)>, f64);

/// DANE against a DNSSEC-signed zone that knot signs, validated from our own root's key
/// (`dns.trust_anchors`): each MX of dane.test has one TLSA record at `_RELAY._tcp`, and
/// Postfix presents the certificate the record names (3 1 1 of its key; 2 0 1 of the CA,
/// with the CA in the chain; 3 1 1 of a self-signed key), or another (a stale 3 1 1).
/// bogus.test has a DS that matches none of its keys, expired.test signatures that expired
/// in 2020 (ldns-signzone); mail.test is delegated unsigned.
pub(super) fn dane_with_a_signed_zone(mta: &Mta) -> Check {
    let (relay, dns) = (mta.get("RELAY_PORT"), mta.get("DNS_PORT"));
    let domains: String = ["dane.test", "bogus.test", "expired.test", "two.mail.test"]
        .iter()
        .map(|d| format!("  - name: {d}\n    ports: [{{ port: {relay}, module: relay }}]\n    policy: {{ https_port: 9 }}\n"))
        .collect();
    let yaml = format!(
        "interval: 2s\ndns:\n  nameservers: [\"127.0.0.1:{dns}\"]\n  timeout: 500ms\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\nmodules:\n  relay: {{ tls: starttls, timeout: 2s, tls_config: {{ ca_file: \"{}\" }} }}\ndomains:\n{domains}",
        mta.get("DNS_TRUST_ANCHORS"),
        mta.get("CA_FILE")
    );
    let path = mta.state_dir.join("dane.yml");
    std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let samples = scrape_until(&exporter, Duration::from_secs(20), "every MX judged", |s| {
        find(s, "smtp_domain_dane_match", &[]).len() == 4
            && find(s, "smtp_domain_dane_status_info", &[]).len() == 8
            && find(s, "smtp_domain_dane_match", &[("mx", "mx3.dane.test")])
                .first()
                .is_some_and(|x| x.value == 1.0)
    })?;
    let get = |family: &str, domain: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("domain", domain)];
        labels.extend_from_slice(extra);
        one(&samples, family, &labels).map(|s| s.value)
    };
    let mut expect: Vec<Expected> = Vec::new();
    for (mx, matched) in
        [("mx1.dane.test", 1.0), ("mx2.dane.test", 1.0), ("mx3.dane.test", 1.0), ("mx4.dane.test", 0.0)]
    {
        expect.push((
            "smtp_domain_dane_status_info",
            "dane.test",
            vec![("mx", mx), ("status", "secure")],
            1.0,
        ));
        expect.push(("smtp_domain_dane_usable_records", "dane.test", vec![("mx", mx)], 1.0));
        expect.push(("smtp_domain_dane_match", "dane.test", vec![("mx", mx)], matched));
    }
    for bogus in ["bogus.test", "expired.test"] {
        let mx = if bogus == "bogus.test" { "mx.bogus.test" } else { "mx.expired.test" };
        expect.push(("smtp_domain_dane_status_info", bogus, vec![("mx", mx), ("status", "bogus")], 1.0));
        expect.push(("smtp_domain_dane_failure_info", bogus, vec![("mx", mx), ("reason", "bogus")], 1.0));
    }
    expect.extend([
        (
            "smtp_domain_dane_failure_info",
            "dane.test",
            vec![("mx", "mx4.dane.test"), ("reason", "no_match")],
            1.0,
        ),
        (
            "smtp_domain_dane_status_info",
            "two.mail.test",
            vec![("mx", "mx1.mail.test"), ("status", "insecure")],
            1.0,
        ),
        (
            "smtp_domain_dane_status_info",
            "two.mail.test",
            vec![("mx", "mx2.mail.test"), ("status", "none")],
            1.0,
        ),
        ("smtp_domain_dane_usable_records", "two.mail.test", vec![("mx", "mx1.mail.test")], 0.0),
    ]);
    for (family, domain, extra, want) in expect {
        let got = get(family, domain, &extra)?;
        if got != want {
            return Err(format!("{family}{{domain={domain},{extra:?}}} is {got}, want {want}"));
        }
    }
    if find(&samples, "smtp_domain_dane_failure_info", &[]).len() != 3 {
        return Err(format!(
            "failures other than mx4's, bogus.test's and expired.test's: {:?}",
            find(&samples, "smtp_domain_dane_failure_info", &[])
        ));
    }
    // The self-signed leaf of mx3 is valid under DANE-EE: the probe succeeds and its
    // certificate verified, where the test CA alone calls it self-signed.
    let mx3 = [("target", "dane.test"), ("mx", "mx3.dane.test")];
    for (family, want) in [("smtp_probe_success", 1.0), ("smtp_tls_cert_verified", 1.0)] {
        let got = one(&samples, family, &mx3)?.value;
        if got != want {
            return Err(format!("{family} of mx3.dane.test is {got}, want {want}"));
        }
    }
    promtool_check_metrics(&exporter.exposition()?)?;
    // check DOMAIN says the same in words.
    let bin = env!("CARGO_BIN_EXE_smtp_exporter");
    let port = format!("{relay}:starttls");
    let dns_server = format!("127.0.0.1:{dns}");
    let check = |domain: &str| {
        let args = [
            "check",
            domain,
            "--mx",
            "--dns-server",
            &dns_server,
            "--dns-trust-anchors",
            mta.get("DNS_TRUST_ANCHORS"),
            "--port",
            &port,
            "--ca-file",
            mta.get("CA_FILE"),
        ];
        // A bogus domain is not delivered to (exit 1): its words are what is checked.
        let out = Command::new(bin).args(args).output().map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let expected = [
        ("bogus.test", "Verdict:\n  validating resolvers cannot resolve the MX of bogus.test: most senders cannot deliver"),
        ("expired.test", "DNSSEC: BOGUS"),
        ("dane.test", "DNSSEC: secure"),
        ("dane.test", "DANE: mx1.dane.test matches 3 1 1; mx2.dane.test matches 2 0 1; mx3.dane.test matches 3 1 1; mx4.dane.test does NOT match — DANE-validating senders will not deliver to mx4.dane.test"),
        ("bogus.test", "DANE: mx.bogus.test: the TLSA answer fails DNSSEC validation"),
        ("expired.test", "DANE: mx.expired.test: the TLSA answer fails DNSSEC validation"),
        ("two.mail.test", "DANE: mx1.mail.test has TLSA records in an unsigned zone (DANE does not apply); mx2.mail.test has no TLSA record"),
    ];
    check_says(check, &expected)?;
    println!("    knot signs ., test., dane.test, bogus.test: 3 1 1, 2 0 1 (CA in the chain) and a self-signed 3 1 1 match, a stale 3 1 1 does not; a wrong DS and expired signatures are bogus, an unsigned delegation insecure");
    Ok(())
}

/// Runs `check` for each domain and requires its output to hold the line wanted.
fn check_says(check: impl Fn(&str) -> Result<String, String>, expected: &[(&str, &str)]) -> Check {
    for (domain, want) in expected {
        let table = check(domain)?;
        if !table.contains(want) {
            return Err(format!("check {domain} lacks {want:?}:\n{table}"));
        }
    }
    Ok(())
}
