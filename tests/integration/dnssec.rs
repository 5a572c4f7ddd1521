//! Issue 25: DNSSEC verdicts behind each kind of name server, against testkit's fake one
//! signed at test time (a root of its own, secure, insecure, bogus and expired zones) and
//! standing in for what sits in front of it: the server itself, a forwarder that strips
//! DNSSEC records (dnsmasq), a validating resolver (unbound).

use std::time::Duration;

use smtp_exporter::dns::{DnsFailure, DnsSettings, Dnssec, DnssecMode, DnssecStatus, MxSet, Resolver};
use testkit::dns::{FakeDns, RecordType, Rr, ServerMode, UdpOversize, ZoneSecurity};
use testkit::exposition::{find, value};
use testkit::pki::TestPki;
use testkit::smtp::{Behaviour, FakeSmtp};

use crate::support::InProcess;

/// The TLSA name of the delivery port `port` of `mx`.
fn tlsa_name(port: u16, mx: &str) -> String {
    format!("_{port}._tcp.{mx}")
}

/// A signed fake serving, under its root: secure.test, insecure.test (provably unsigned),
/// bogus.test (a DS that matches none of its keys) and expired.test (signatures past
/// their end). Each has an MX `mx.<zone>` at 127.0.0.1 with a TLSA record on `port`
/// naming `spki_sha256` (3 1 1).
async fn signed_zones(port: u16, spki_sha256: &[u8]) -> (FakeDns, std::path::PathBuf) {
    let dns = FakeDns::start_signed(60).await;
    dns.zone("secure.test", ZoneSecurity::Secure)
        .zone("insecure.test", ZoneSecurity::Insecure)
        .zone("bogus.test", ZoneSecurity::Bogus)
        .zone("expired.test", ZoneSecurity::Expired);
    for zone in ["secure.test", "insecure.test", "bogus.test", "expired.test"] {
        let mx = format!("mx.{zone}");
        dns.add(zone, Rr::Mx(10, mx.clone()))
            .add(&mx, Rr::Addr("127.0.0.1".parse().unwrap()))
            .add(&tlsa_name(port, &mx), Rr::Tlsa(3, 1, 1, spki_sha256.to_vec()));
    }
    let anchor =
        std::env::temp_dir().join(format!("smtp-exporter-anchor-{}-{}", std::process::id(), dns.addr.port()));
    dns.trust_anchor_file(&anchor);
    (dns, anchor)
}

fn settings(dns: &FakeDns, anchor: &std::path::Path, dnssec: DnssecMode) -> DnsSettings {
    DnsSettings {
        nameservers: vec![dns.addr],
        timeout: Duration::from_millis(500),
        attempts: 1,
        min_ttl: Duration::from_secs(1),
        cache_size: 0,
        trust_anchors: Some(anchor.to_owned()),
        dnssec,
        ..DnsSettings::default()
    }
}

/// The SHA-256 of the fake SMTP server's key (SPKI): what a 3 1 1 record of it holds.
fn spki_sha256(pki: &TestPki) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(&pki.leaf_der).unwrap();
    ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw).as_ref().to_vec()
}

/// Through the signed server itself (what an authoritative server or a resolver that
/// passes DNSSEC records gives), `validate` reaches every verdict: secure and insecure
/// records, bogus and expired zones, for the TLSA records and for the domain's own MX; a
/// secure "no such record" keeps its SOA's negative TTL.
#[tokio::test]
async fn validate_judges_every_zone_through_a_server_that_passes_dnssec_records() {
    let (dns, anchor) = signed_zones(25, &[7; 32]).await;
    dns.set_negative_ttl(7);
    let resolver = Resolver::new(&settings(&dns, &anchor, DnssecMode::Validate)).unwrap();
    assert!(resolver.dnssec_capability(true).await.capable());
    let secure = resolver.tlsa(&tlsa_name(25, "mx.secure.test")).await.unwrap().value;
    assert_eq!((secure.dnssec, secure.records.len(), secure.why), (Dnssec::Secure, 1, None));
    let insecure = resolver.tlsa(&tlsa_name(25, "mx.insecure.test")).await.unwrap().value;
    assert_eq!(insecure.dnssec, Dnssec::Insecure);
    for bogus in ["mx.bogus.test", "mx.expired.test"] {
        let failure = resolver.tlsa(&tlsa_name(25, bogus)).await.unwrap_err();
        assert_eq!(failure.failure, DnsFailure::Bogus, "{bogus}: {}", failure.detail);
    }
    let none = resolver.tlsa(&tlsa_name(587, "mx.secure.test")).await.unwrap_err();
    assert_eq!((none.failure, none.ttl), (DnsFailure::Nxdomain, Duration::from_secs(7)), "{}", none.detail);
    for (domain, status) in [
        ("secure.test", DnssecStatus::Secure),
        ("insecure.test", DnssecStatus::Insecure),
        ("bogus.test", DnssecStatus::Bogus),
        ("expired.test", DnssecStatus::Bogus),
    ] {
        let verdict = resolver.dnssec_of(domain, hickory_resolver::proto::rr::RecordType::MX).await;
        assert_eq!(verdict.status, status, "{domain}: {}", verdict.detail);
    }
}

/// Behind a forwarder that strips DNSSEC records (all of them, or only the signatures),
/// no verdict can be had: every one is indeterminate and names the name server and the
/// fix; none is bogus, the records are still read.
#[tokio::test]
async fn nothing_is_bogus_behind_a_forwarder_that_strips_dnssec() {
    for mode in [ServerMode::Strip, ServerMode::StripSignatures] {
        let (dns, anchor) = signed_zones(25, &[7; 32]).await;
        dns.set_mode(mode);
        let resolver = Resolver::new(&settings(&dns, &anchor, DnssecMode::Validate)).unwrap();
        let capability = resolver.dnssec_capability(true).await;
        assert!(!capability.capable(), "{mode:?}");
        let why = capability.explain().unwrap();
        assert!(why.contains(&format!("the name server {}", dns.addr)), "{why}");
        for mx in ["mx.secure.test", "mx.insecure.test", "mx.bogus.test", "mx.expired.test"] {
            let set = resolver.tlsa(&tlsa_name(25, mx)).await.unwrap().value;
            assert_eq!((set.dnssec, set.records.len()), (Dnssec::Indeterminate, 1), "{mode:?} {mx}");
            assert_eq!(set.why.as_deref(), Some(why.as_str()));
        }
        for domain in ["secure.test", "bogus.test"] {
            let verdict = resolver.dnssec_of(domain, hickory_resolver::proto::rr::RecordType::MX).await;
            assert_eq!(
                (verdict.status, verdict.detail.as_str()),
                (DnssecStatus::Indeterminate, why.as_str())
            );
        }
    }
}

/// Behind a validating resolver: `trust_ad` reads its AD bit (secure), its absence
/// (insecure) and its SERVFAIL that checking disabled lifts (bogus); `validate` checks the
/// signatures it passes on, and reads the same SERVFAIL as bogus too.
#[tokio::test]
async fn a_validating_resolver_is_read_by_its_ad_bit_or_validated_through() {
    let (dns, anchor) = signed_zones(25, &[7; 32]).await;
    dns.set_mode(ServerMode::Validating);
    for mode in [DnssecMode::TrustAd, DnssecMode::Validate] {
        let resolver = Resolver::new(&settings(&dns, &anchor, mode)).unwrap();
        assert!(resolver.dnssec_capability(true).await.capable(), "{mode:?}");
        let secure = resolver.tlsa(&tlsa_name(25, "mx.secure.test")).await.unwrap().value;
        assert_eq!(secure.dnssec, Dnssec::Secure, "{mode:?}");
        let insecure = resolver.tlsa(&tlsa_name(25, "mx.insecure.test")).await.unwrap().value;
        assert_eq!(insecure.dnssec, Dnssec::Insecure, "{mode:?}");
        let bogus = resolver.tlsa(&tlsa_name(25, "mx.bogus.test")).await.unwrap_err();
        assert_eq!(bogus.failure, DnsFailure::Bogus, "{mode:?}: {}", bogus.detail);
        for (domain, status) in [
            ("secure.test", DnssecStatus::Secure),
            ("insecure.test", DnssecStatus::Insecure),
            ("bogus.test", DnssecStatus::Bogus),
        ] {
            let verdict = resolver.dnssec_of(domain, hickory_resolver::proto::rr::RecordType::MX).await;
            assert_eq!(verdict.status, status, "{mode:?} {domain}: {}", verdict.detail);
        }
        // The MX hosts of the bogus domain, from the answer checking disabled gives.
        let unchecked = resolver.mx_unchecked("bogus.test").await.expect("an answer with CD");
        assert!(
            matches!(&unchecked.value, MxSet::Hosts(h) if h[0].host == "mx.bogus.test"),
            "{:?}",
            unchecked.value
        );
    }
    // trust_ad through a server that validates nothing: no AD on the root's keys.
    dns.set_mode(ServerMode::Authoritative);
    let resolver = Resolver::new(&settings(&dns, &anchor, DnssecMode::TrustAd)).unwrap();
    let capability = resolver.dnssec_capability(true).await;
    assert!(capability.explain().unwrap().contains("does not set the AD bit"), "{capability:?}");
}

/// The exporter end to end: through the signed server, secure.test's MX matches its TLSA
/// record (DANE holds) and is deliverable; bogus.test answers on its MX all the same, but
/// validating senders cannot find it: not deliverable, and its status says bogus; the
/// name server's capability is a series. Behind a stripping forwarder nothing is bogus and
/// both are deliverable; with `dns.dnssec: off` no TLSA query is made at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_reports_each_domains_dnssec_and_never_bogus_through_a_forwarder() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let port = server.port();
    let (dns, anchor) = signed_zones(port, &spki_sha256(&pki)).await;
    let config = |mode: &str| {
        format!(
            "dns:\n  nameservers: [\"{}\"]\n  timeout: 500ms\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\n  dnssec: {mode}\nmodules:\n  relay: {{ tls: starttls, timeout: 2s }}\ndomains:\n  - name: secure.test\n    ports: [{{ port: {port}, module: relay }}]\n  - name: bogus.test\n    ports: [{{ port: {port}, module: relay }}]\n",
            dns.addr,
            anchor.display()
        )
    };
    let walked = |s: &[testkit::exposition::Sample]| {
        find(s, "smtp_domain_dnssec_status_info", &[]).len() == 2
            && find(s, "smtp_probe_success", &[]).len() == 2
            && !find(s, "smtp_exporter_dns_dnssec_capable", &[]).is_empty()
    };
    let status = |s: &[testkit::exposition::Sample], domain: &str| {
        find(s, "smtp_domain_dnssec_status_info", &[("domain", domain)])[0].labels["status"].clone()
    };
    let domain = |s: &[testkit::exposition::Sample], domain: &str, family: &str| {
        value(s, family, &[("domain", domain)])
    };

    let exporter = InProcess::start(config("validate"), "dnssec.yml").await;
    let samples = exporter
        .scrape_until(Duration::from_secs(15), "both domains walked and probed, DANE judged", |s| {
            walked(s) && !find(s, "smtp_domain_dane_match", &[("domain", "secure.test")]).is_empty()
        })
        .await;
    assert_eq!(
        value(&samples, "smtp_exporter_dns_dnssec_capable", &[("server", &dns.addr.to_string())]),
        1.0
    );
    assert_eq!(
        (status(&samples, "secure.test"), status(&samples, "bogus.test")),
        ("secure".into(), "bogus".into())
    );
    assert_eq!(
        value(&samples, "smtp_domain_dane_match", &[("domain", "secure.test"), ("mx", "mx.secure.test")]),
        1.0
    );
    assert_eq!(value(&samples, "smtp_domain_dane_usable_records", &[("domain", "secure.test")]), 1.0);
    assert_eq!(domain(&samples, "secure.test", "smtp_domain_deliverable"), 1.0);
    // Its MX answers (the probe succeeds), but validating senders cannot find it.
    assert_eq!(value(&samples, "smtp_probe_success", &[("target", "bogus.test")]), 1.0);
    assert_eq!(domain(&samples, "bogus.test", "smtp_domain_deliverable"), 0.0);
    assert_eq!(domain(&samples, "bogus.test", "smtp_domain_primary_deliverable"), 0.0);
    let dane_bogus = [("domain", "bogus.test"), ("mx", "mx.bogus.test"), ("status", "bogus")];
    assert_eq!(value(&samples, "smtp_domain_dane_status_info", &dane_bogus), 1.0);
    exporter.stop().await;

    dns.set_mode(ServerMode::Strip);
    let exporter = InProcess::start(config("validate"), "dnssec-strip.yml").await;
    let samples = exporter.scrape_until(Duration::from_secs(15), "both domains walked", walked).await;
    assert_eq!(
        value(&samples, "smtp_exporter_dns_dnssec_capable", &[("server", &dns.addr.to_string())]),
        0.0
    );
    for name in ["secure.test", "bogus.test"] {
        assert_eq!(status(&samples, name), "indeterminate", "{name}");
        assert_eq!(domain(&samples, name, "smtp_domain_deliverable"), 1.0, "{name}");
    }
    let bogus: Vec<_> = samples
        .iter()
        .filter(|s| s.labels.get("status").or(s.labels.get("reason")).is_some_and(|v| v == "bogus"))
        .collect();
    assert!(bogus.is_empty(), "{bogus:?}");
    exporter.stop().await;

    dns.set_mode(ServerMode::Authoritative);
    let before = dns.queries_of(RecordType::TLSA);
    let exporter = InProcess::start(config("off"), "dnssec-off.yml").await;
    let samples = exporter
        .scrape_until(Duration::from_secs(15), "both domains walked", |s| {
            find(s, "smtp_domain_dnssec_status_info", &[]).len() == 2
                && find(s, "smtp_probe_success", &[]).len() == 2
        })
        .await;
    assert_eq!(status(&samples, "secure.test"), "not_checked");
    assert!(find(&samples, "smtp_domain_dane_status_info", &[]).is_empty());
    assert!(find(&samples, "smtp_exporter_dns_dnssec_capable", &[]).is_empty());
    assert_eq!(dns.queries_of(RecordType::TLSA), before, "dns.dnssec: off asks no TLSA record");
    exporter.stop().await;
    let _ = std::fs::remove_file(&anchor);
}

/// An MX answer larger than a UDP datagram from a server that does not set TC (500
/// records) is asked again over TCP, and the walk keeps its first 16 hosts.
#[tokio::test]
async fn an_mx_answer_that_does_not_fit_udp_is_asked_again_over_tcp() {
    let dns = FakeDns::start(60).await;
    for n in 0..500 {
        dns.add("big.example.test", Rr::Mx(10 + n, format!("mx{n}.big.example.test")));
    }
    dns.set_udp_oversize(UdpOversize::SendWhole);
    let settings = DnsSettings {
        nameservers: vec![dns.addr],
        timeout: Duration::from_millis(500),
        attempts: 1,
        cache_size: 0,
        ..DnsSettings::default()
    };
    let resolver = Resolver::new(&settings).unwrap();
    let answer = resolver.mx("big.example.test").await.unwrap();
    match answer.value {
        MxSet::Hosts(hosts) => {
            assert_eq!(hosts.len(), smtp_exporter::dns::MAX_MX_HOSTS);
            assert_eq!(hosts[0].host, "mx0.big.example.test");
        }
        other => panic!("{other:?}"),
    }
    assert!(dns.tcp_queries() >= 1, "asked again over TCP");
}

/// `check DOMAIN` as a user runs it: behind a forwarder that strips DNSSEC, a verdict and
/// the DNSSEC line naming the name server; through the signed server, a bogus domain's
/// verdict says so first (the validator meets failed proofs, which hickory logs with
/// `Debug` dumps of its messages). No library's struct dump anywhere in what it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_what_dnssec_allows_and_prints_no_library_dump() {
    let (dns, anchor) = signed_zones(25, &[7; 32]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let check = |domain: &str| {
        let args: Vec<String> = ["check", domain, "--dns-server", &dns.addr.to_string()]
            .into_iter()
            .map(str::to_owned)
            .chain(["--dns-trust-anchors".to_owned(), anchor.display().to_string()])
            .chain(["--port".to_owned(), closed.to_string(), "--timeout".to_owned(), "2s".to_owned()])
            .collect();
        async move {
            let output = tokio::task::spawn_blocking(move || {
                std::process::Command::new(crate::cli::BIN).args(&args).output().unwrap()
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            for dump in ["{ ", "Query {", "DnsResponse", "Message {", "hickory"] {
                assert!(!text.contains(dump), "{dump:?} in:\n{text}");
            }
            (output.status.code(), text)
        }
    };
    let (code, text) = check("bogus.test").await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("Verdict:\n  validating resolvers cannot resolve the MX of bogus.test: most senders cannot deliver"),
        "{text}"
    );
    assert!(text.contains("DNSSEC: BOGUS"), "{text}");
    dns.set_mode(ServerMode::Strip);
    let (_, text) = check("secure.test").await;
    assert!(text.contains("Verdict:\n  mail to secure.test is NOT delivered from here"), "{text}");
    let line = format!("DNSSEC: not judged (DNSSEC cannot be judged from here: the name server {}", dns.addr);
    assert!(text.contains(&line), "{text}");
    let _ = std::fs::remove_file(&anchor);
}

/// Behind a validating resolver, a bogus domain's MX and its hosts' addresses are all
/// SERVFAIL: the walk asks again with checking disabled, so the MX is still probed, the
/// domain is bogus and not deliverable, and `check` says the bogus verdict first. With
/// `dns.dnssec: off` the same domain is a SERVFAIL, its status `not_checked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_domain_behind_a_validating_resolver_is_still_probed() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let port = server.port();
    let (dns, anchor) = signed_zones(port, &spki_sha256(&pki)).await;
    dns.set_mode(ServerMode::Validating);
    let config = |mode: &str| {
        format!(
            "dns:\n  nameservers: [\"{}\"]\n  timeout: 500ms\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\n  dnssec: {mode}\nmodules:\n  relay: {{ tls: starttls, timeout: 2s }}\ndomains:\n  - name: bogus.test\n    ports: [{{ port: {port}, module: relay }}]\n",
            dns.addr,
            anchor.display()
        )
    };
    for mode in ["trust_ad", "validate"] {
        let exporter = InProcess::start(config(mode), "dnssec-bogus.yml").await;
        let samples = exporter
            .scrape_until(Duration::from_secs(15), "bogus.test probed", |s| {
                !find(s, "smtp_probe_success", &[("target", "bogus.test")]).is_empty()
            })
            .await;
        let status = [("domain", "bogus.test"), ("status", "bogus")];
        assert_eq!(value(&samples, "smtp_domain_dnssec_status_info", &status), 1.0, "{mode}");
        assert_eq!(value(&samples, "smtp_probe_success", &[("target", "bogus.test")]), 1.0, "{mode}");
        assert_eq!(value(&samples, "smtp_domain_deliverable", &[("domain", "bogus.test")]), 0.0, "{mode}");
        assert!(find(&samples, "smtp_domain_dns_failure_info", &[]).is_empty(), "{mode}");
        exporter.stop().await;
    }
    let exporter = InProcess::start(config("off"), "dnssec-bogus-off.yml").await;
    let samples = exporter
        .scrape_until(Duration::from_secs(15), "bogus.test walked", |s| {
            !find(s, "smtp_domain_dnssec_status_info", &[("domain", "bogus.test")]).is_empty()
        })
        .await;
    let status = [("domain", "bogus.test"), ("status", "not_checked")];
    assert_eq!(value(&samples, "smtp_domain_dnssec_status_info", &status), 1.0);
    let servfail = [("domain", "bogus.test"), ("reason", "servfail")];
    assert_eq!(value(&samples, "smtp_domain_dns_failure_info", &servfail), 1.0);
    exporter.stop().await;

    let args: Vec<String> =
        ["check", "bogus.test", "--dns-server", &dns.addr.to_string(), "--dnssec", "trust_ad"]
            .into_iter()
            .map(str::to_owned)
            .chain(["--dns-trust-anchors".to_owned(), anchor.display().to_string()])
            .chain(["--port".to_owned(), format!("{port}:starttls"), "--timeout".to_owned(), "2s".to_owned()])
            .collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::cli::BIN).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("Verdict:\n  validating resolvers cannot resolve the MX of bogus.test"), "{text}");
    assert!(text.contains("Without DNSSEC, mail to bogus.test is delivered via mx.bogus.test"), "{text}");
    let _ = std::fs::remove_file(&anchor);
}

/// A bogus verdict is given only once the name servers are asked again: one that stopped
/// passing DNSSEC records since its last check (5 minutes may pass between checks) makes
/// the answer indeterminate, naming it, not bogus.
#[tokio::test]
async fn a_bogus_verdict_is_confirmed_by_asking_the_name_servers_again() {
    let (dns, anchor) = signed_zones(25, &[7; 32]).await;
    let resolver = Resolver::new(&settings(&dns, &anchor, DnssecMode::Validate)).unwrap();
    assert!(resolver.dnssec_capability(false).await.capable());
    dns.set_mode(ServerMode::Strip);
    let set = resolver.tlsa(&tlsa_name(25, "mx.secure.test")).await.expect("not a failure").value;
    assert_eq!((set.dnssec, set.records.len()), (Dnssec::Indeterminate, 0));
    let why = set.why.unwrap_or_default();
    assert!(why.contains(&format!("the name server {}", dns.addr)), "{why}");
    // The new state holds for the next lookups, without asking again.
    let before = dns.queries_of(RecordType::DNSKEY);
    let next = resolver.tlsa(&tlsa_name(25, "mx.bogus.test")).await.unwrap().value;
    assert_eq!((next.dnssec, next.records.len()), (Dnssec::Indeterminate, 1));
    assert_eq!(dns.queries_of(RecordType::DNSKEY), before);
    let _ = std::fs::remove_file(&anchor);
}

/// Behind a validating resolver, an MX host in a bogus zone is a SERVFAIL for senders who
/// validate: a domain that is itself secure does not get it asked again with checking
/// disabled (only a bogus domain's own hosts are), so it is not probed, and the domain is
/// not deliverable through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_host_in_a_bogus_zone_is_not_probed_for_a_secure_domain() {
    let (dns, anchor) = signed_zones(25, &[7; 32]).await;
    dns.add("other.test", Rr::Mx(10, "mx.bogus.test".into()));
    dns.set_mode(ServerMode::Validating);
    let yaml = format!(
        "dns:\n  nameservers: [\"{}\"]\n  timeout: 500ms\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n  - name: other.test\n    ports: [{{ port: 25, module: relay }}]\n    policy: {{ enabled: false, dane: false }}\n",
        dns.addr,
        anchor.display()
    );
    let exporter = InProcess::start(yaml, "dnssec-bogus-host.yml").await;
    let samples = exporter
        .scrape_until(Duration::from_secs(15), "other.test walked", |s| {
            !find(s, "smtp_domain_dns_failure_info", &[("domain", "other.test")]).is_empty()
        })
        .await;
    assert_eq!(
        value(&samples, "smtp_domain_dnssec_status_info", &[("domain", "other.test"), ("status", "secure")]),
        1.0
    );
    assert_eq!(
        value(&samples, "smtp_domain_dns_failure_info", &[("domain", "other.test"), ("reason", "servfail")]),
        1.0
    );
    assert!(find(&samples, "smtp_probe_success", &[]).is_empty(), "nothing probed");
    assert_eq!(value(&samples, "smtp_domain_deliverable", &[("domain", "other.test")]), 0.0);
    exporter.stop().await;
    let _ = std::fs::remove_file(&anchor);
}
