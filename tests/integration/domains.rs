//! Mail domains and hosts probed on every address, end to end against the fake name server:
//! MX walk, implicit and null MX, both families, classified DNS failures, and specs that
//! follow the zone as it changes.

use std::time::Duration;

use crate::support::InProcess;

use testkit::dns::{Behaviour as Dns, FakeDns, Rr};
use testkit::exposition::{find, value};
use testkit::pki::TestPki;
use testkit::smtp::{Behaviour, FakeSmtp};

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_are_walked_like_a_sender_and_follow_the_zone() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let port = server.port();
    let dns = FakeDns::start(1).await;
    dns.add("two.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("two.example.test", Rr::Mx(20, "mx2.example.test".into()))
        .add("mx1.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("mx1.example.test", Rr::Addr(ip("::1")))
        .add("mx2.example.test", Rr::Cname("mx2-real.example.test".into()))
        .add("mx2-real.example.test", Rr::Addr(ip("127.0.0.2")))
        .add("null.example.test", Rr::Mx(0, ".".into()))
        .add("implicit.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("noaddr.example.test", Rr::Mx(10, "empty.example.test".into()))
        .add("empty.example.test", Rr::Mx(10, "elsewhere.example.test".into()))
        .add("broken.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("dual.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("dual.example.test", Rr::Addr(ip("::1")));
    dns.set_behaviour("broken.example.test", Dns::Servfail);
    let domains: String = ["two", "null", "implicit", "nx", "noaddr", "broken"]
        .iter()
        .map(|d| format!("  - name: {d}.example.test\n    ports: [{{ port: {port}, module: relay }}]\n"))
        .collect();
    let yaml = format!(
        "interval: 2s\ndns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\n  every: {{ tls: starttls, timeout: 1s, ip_protocol: both }}\ntargets:\n  - name: dual\n    host: dual.example.test\n    ports: [{{ port: {port}, module: every }}]\ndomains:\n{domains}",
        dns.addr
    );
    let exporter = InProcess::start(yaml, "domains.yml").await;
    let addr = exporter.addr;

    let two = [("target", "two.example.test")];
    let samples = exporter
        .scrape_until(Duration::from_secs(10), "every address probed", |s| {
            find(s, "smtp_probe_success", &two).len() == 3
                && find(s, "smtp_probe_success", &[("target", "implicit.example.test")]).len() == 1
                && find(s, "smtp_probe_success", &[("target", "dual")]).len() == 2
                && find(s, "smtp_domain_deliverable", &[]).len() == 6
        })
        .await;
    let success = |target: &str, mx: &str, address: &str| {
        let mut labels = vec![("target", target), ("address", address)];
        if !mx.is_empty() {
            labels.push(("mx", mx));
        }
        value(&samples, "smtp_probe_success", &labels)
    };
    // The MX set in preference order: mx1 works over IPv4, its IPv6 address and the
    // CNAME'd mx2 have nothing listening.
    assert_eq!(success("two.example.test", "mx1.example.test", "127.0.0.1"), 1.0);
    assert_eq!(success("two.example.test", "mx1.example.test", "::1"), 0.0);
    assert_eq!(success("two.example.test", "mx2.example.test", "127.0.0.2"), 0.0);
    let ip6 = [("target", "two.example.test"), ("family", "ip6"), ("state", "refused")];
    assert_eq!(value(&samples, "smtp_port_state", &ip6), 1.0);
    let domain = |name: &str, family: &str| value(&samples, family, &[("domain", name)]);
    assert_eq!(domain("two.example.test", "smtp_domain_mx_hosts"), 2.0);
    let mx2 = [("domain", "two.example.test"), ("mx", "mx2.example.test"), ("preference", "20")];
    assert_eq!(value(&samples, "smtp_domain_mx_info", &mx2), 1.0);
    assert_eq!(domain("two.example.test", "smtp_domain_deliverable"), 1.0);
    assert_eq!(domain("two.example.test", "smtp_domain_primary_deliverable"), 1.0);
    let mx2_ok = [("domain", "two.example.test"), ("mx", "mx2.example.test")];
    assert_eq!(value(&samples, "smtp_domain_mx_deliverable", &mx2_ok), 0.0);
    // A null MX accepts no mail, and that is not a DNS failure.
    assert_eq!(domain("null.example.test", "smtp_domain_null_mx"), 1.0);
    assert_eq!(domain("null.example.test", "smtp_domain_dns_success"), 1.0);
    assert_eq!(domain("null.example.test", "smtp_domain_deliverable"), 0.0);
    // No MX: the domain's own address is its MX.
    assert_eq!(domain("implicit.example.test", "smtp_domain_implicit_mx"), 1.0);
    assert_eq!(domain("implicit.example.test", "smtp_domain_deliverable"), 1.0);
    assert_eq!(success("implicit.example.test", "implicit.example.test", "127.0.0.1"), 1.0);
    // Failures, each with its reason.
    for (name, reason) in [("nx", "nxdomain"), ("noaddr", "no_records"), ("broken", "servfail")] {
        let name = format!("{name}.example.test");
        let labels = [("domain", name.as_str()), ("reason", reason)];
        assert_eq!(value(&samples, "smtp_domain_dns_failure_info", &labels), 1.0, "{name}");
        assert_eq!(domain(&name, "smtp_domain_deliverable"), 0.0, "{name}");
        assert_eq!(domain(&name, "smtp_domain_dns_success"), 0.0, "{name}");
    }
    let empty = [("domain", "noaddr.example.test"), ("mx", "empty.example.test"), ("family", "ip4")];
    assert_eq!(value(&samples, "smtp_domain_mx_addresses", &empty), 0.0);
    // A host under ip_protocol: both: each family its own spec.
    assert_eq!(success("dual", "", "127.0.0.1"), 1.0);
    assert_eq!(success("dual", "", "::1"), 0.0);
    assert_eq!(value(&samples, "smtp_target_addresses", &[("target", "dual"), ("family", "ip6")]), 1.0);
    assert!(find(&samples, "smtp_probe_phase_duration_seconds", &[("target", "dual"), ("phase", "resolve")])
        .is_empty());

    // The status page puts the domains first, undeliverable ones on top, and names each
    // spec's MX and address.
    let page = tokio::task::spawn_blocking(move || testkit::http::get(addr, "/").unwrap()).await.unwrap().1;
    let first = |needle: &str| page.find(needle).unwrap_or_else(|| panic!("{needle} not on the page"));
    assert!(
        first("data-domain=\"broken.example.test\" data-deliverable=\"0\"")
            < first("data-domain=\"two.example.test\" data-deliverable=\"1\"")
    );
    assert!(page.contains("<span data-mx=\"mx1.example.test\">10: mx1.example.test (ip4)</span>"), "{page}");
    assert!(page.contains("<span data-mx=\"mx2.example.test\">20: mx2.example.test (fails)</span>"));
    assert!(page.contains("accepts no mail (null MX)"));
    assert!(page.contains("<small class=\"via\" data-address=\"::1\">mx1.example.test ::1</small>"));
    assert!(first("id=\"domains\"") < first("id=\"specs\""));

    // The zone changes: mx2 leaves, mx1 loses its IPv6 address. Within the TTL floor
    // (1 s) and a probe, their series vanish.
    dns.retain("two.example.test", |rr| rr != &Rr::Mx(20, "mx2.example.test".into()));
    dns.retain("mx1.example.test", |rr| rr != &Rr::Addr(ip("::1")));
    let samples = exporter
        .scrape_until(Duration::from_secs(6), "the old MX and address dropped", |s| {
            find(s, "smtp_probe_success", &two).len() == 1
                && find(s, "smtp_domain_mx_info", &[("domain", "two.example.test")]).len() == 1
        })
        .await;
    assert_eq!(value(&samples, "smtp_domain_mx_hosts", &[("domain", "two.example.test")]), 1.0);
    assert!(find(&samples, "smtp_port_state", &[("mx", "mx2.example.test")]).is_empty());

    // A name server that stops answering: classified as a timeout; the specs found before
    // are kept, and the rest of the fleet goes on.
    dns.set_behaviour("two.example.test", Dns::Silent);
    let samples = exporter
        .scrape_until(Duration::from_secs(6), "a timeout reported", |s| {
            !find(s, "smtp_domain_dns_failure_info", &[("domain", "two.example.test"), ("reason", "timeout")])
                .is_empty()
        })
        .await;
    assert_eq!(find(&samples, "smtp_probe_success", &two).len(), 1);
    assert_eq!(value(&samples, "smtp_domain_deliverable", &[("domain", "two.example.test")]), 0.0);
    assert_eq!(value(&samples, "smtp_domain_deliverable", &[("domain", "implicit.example.test")]), 1.0);

    exporter.stop().await;
}

fn check_args(domain: &str, dns: &FakeDns, port: u16, json: bool) -> smtp_exporter::check::CheckArgs {
    smtp_exporter::check::CheckArgs {
        host: domain.into(),
        ports: vec![smtp_exporter::check::PortArg {
            port,
            mode: Some(smtp_exporter::config::TlsMode::Starttls),
        }],
        user: None,
        password_file: None,
        timeout: Duration::from_secs(2),
        ca_file: None,
        insecure: false,
        json,
        mx: false,
        dns_server: Some(dns.addr),
        dns_trust_anchors: None,
        dnssec: smtp_exporter::dnssec::DnssecMode::Validate,
        deliver: None,
        mail_from: None,
        imap_host: None,
        imap_port: None,
        imap_starttls: false,
        imap_user: None,
        imap_password_file: None,
    }
}

/// `check DOMAIN` walks the MX set like a sender when the name has MX records, and says
/// in words where mail goes and what is broken.
#[tokio::test]
async fn check_walks_a_domain_and_gives_a_verdict() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(60).await;
    dns.add("two.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("two.example.test", Rr::Mx(20, "mx2.example.test".into()))
        .add("mx1.example.test", Rr::Addr(ip("127.0.0.2")))
        .add("mx2.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("mx2.example.test", Rr::Addr(ip("::1")))
        .add("null.example.test", Rr::Mx(0, ".".into()));
    let output =
        smtp_exporter::check::run(&check_args("two.example.test", &dns, server.port(), false)).await.unwrap();
    assert!(output.any_success, "{}", output.text);
    assert!(
        output.text.contains(
            "mail to two.example.test is delivered via mx2.example.test (IPv4 only): mx1.example.test refuses, IPv6 of mx2.example.test refuses."
        ),
        "{}",
        output.text
    );
    assert!(output.text.contains("MX: 10 mx1.example.test, 20 mx2.example.test"), "{}", output.text);
    // The walk looked each MX's TLSA records up and the policy section says so per MX. The
    // fake server gives no DNSSEC answer (NXDOMAIN for the root's keys): the DNSSEC line
    // says no verdict can be had through it, and why, instead of calling anything bogus.
    let dane = "DANE: mx1.example.test has no TLSA record; mx2.example.test has no TLSA record";
    assert!(output.text.contains(dane), "{}", output.text);
    let dnssec = format!(
        "DNSSEC: not judged (DNSSEC cannot be judged from here: the name server {} answers NXDOMAIN for the root's DNSKEY; point dns.nameservers at",
        dns.addr
    );
    assert!(output.text.contains(&dnssec), "{}", output.text);
    assert!(!output.text.to_lowercase().contains("bogus"), "{}", output.text);

    let output =
        smtp_exporter::check::run(&check_args("null.example.test", &dns, server.port(), true)).await.unwrap();
    assert!(!output.any_success);
    let json: serde_json::Value = serde_json::from_str(&output.text).unwrap();
    assert_eq!(json["null_mx"], true);
    assert_eq!(json["verdict"], "null.example.test accepts no mail: it publishes a null MX (RFC 7505).");

    let mut args = check_args("nx.example.test", &dns, server.port(), true);
    args.mx = true;
    let output = smtp_exporter::check::run(&args).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&output.text).unwrap();
    assert_eq!(json["dns_failure"], "nxdomain", "{}", output.text);
}

/// The resolver's cache answers a second lookup within the TTL without a query; with
/// `cache_size: 0` every lookup is a query.
#[tokio::test]
async fn the_cache_answers_within_the_ttl_and_can_be_turned_off() {
    use smtp_exporter::dns::{DnsSettings, Family, Resolver};
    let dns = FakeDns::start(60).await;
    dns.add("mx1.example.test", Rr::Addr(ip("127.0.0.1")));
    for (cache_size, want) in [(8192, 1), (0, 3)] {
        let before = dns.queries();
        let settings = DnsSettings { nameservers: vec![dns.addr], cache_size, ..DnsSettings::default() };
        let resolver = Resolver::new(&settings).unwrap();
        for _ in 0..3 {
            let answer = resolver.addresses("mx1.example.test", Family::Ip4).await.unwrap();
            assert_eq!(answer.value, vec![ip("127.0.0.1")]);
        }
        assert_eq!(dns.queries() - before, want, "cache_size {cache_size}");
    }
}

/// Issue 17: an envelope check's `{domain}` is the name of the `domains:` entry whose MX is
/// probed, not the MX's own name.
#[tokio::test]
async fn the_envelope_names_the_domain_whose_mx_is_probed() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(60).await;
    dns.add("env.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("mx1.example.test", Rr::Addr(ip("127.0.0.1")));
    let yaml = format!(
        "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\nmodules:\n  mx:\n    tls: starttls\n    timeout: 2s\n    envelope: {{ accept: [\"postmaster@{{domain}}\"] }}\ndomains:\n  - name: env.example.test\n    ports: [{{ port: {}, module: mx }}]\n    policy: {{ dane: false }}\n",
        dns.addr,
        server.port()
    );
    let exporter = InProcess::start(yaml, "envelope-domain.yml").await;
    let sessions = tokio::time::timeout(Duration::from_secs(10), server.wait_for_connections(1))
        .await
        .expect("the MX is probed");
    let rcpt: Vec<&String> = sessions[0].lines.iter().filter(|l| l.starts_with("RCPT")).collect();
    assert_eq!(rcpt, ["RCPT TO:<postmaster@env.example.test>"], "{:?}", sessions[0].lines);
    exporter.stop().await;
}

/// Issue 17: a probe's address is IPv4 first, then IPv6 when the name has no A record;
/// any other failure of the A lookup is final, and "neither an A nor an AAAA record" is
/// said only when both were asked.
#[tokio::test]
async fn the_first_address_falls_back_to_ipv6_only_for_a_missing_a_record() {
    use smtp_exporter::dns::{DnsFailure, DnsSettings, Family, Resolver};
    let dns = FakeDns::start(60).await;
    dns.add("six.example.test", Rr::Addr(ip("::1")))
        .add("both.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("both.example.test", Rr::Addr(ip("::1")))
        .add("none.example.test", Rr::Mx(10, "mx.example.test".into()))
        .add("failing.example.test", Rr::Addr(ip("::1")));
    dns.set_behaviour("failing.example.test", Dns::Servfail);
    let settings = DnsSettings { nameservers: vec![dns.addr], attempts: 1, ..DnsSettings::default() };
    let resolver = Resolver::new(&settings).unwrap();
    assert_eq!(resolver.first_address("six.example.test", None).await.unwrap(), ip("::1"));
    assert_eq!(resolver.first_address("both.example.test", None).await.unwrap(), ip("127.0.0.1"));
    let failed = resolver.first_address("failing.example.test", None).await.unwrap_err();
    assert_eq!(failed.failure, DnsFailure::Servfail, "{failed:?}");
    assert!(!failed.detail.contains("neither"), "{failed:?}");
    let neither = resolver.first_address("none.example.test", None).await.unwrap_err();
    assert_eq!(neither.failure, DnsFailure::NoRecords);
    assert_eq!(neither.detail, "none.example.test has neither an A nor an AAAA record");
    let no_a = resolver.first_address("none.example.test", Some(Family::Ip4)).await.unwrap_err();
    assert_eq!((no_a.failure, no_a.detail.contains("neither")), (DnsFailure::NoRecords, false), "{no_a:?}");
}

/// Issue 17: a negative answer carries how long it holds (its SOA's minimum), for the
/// walk to look again no sooner; NXDOMAIN and a name without the type asked alike. A name
/// server that is not there is a timeout.
#[tokio::test]
async fn negative_answers_hold_for_their_soa_minimum() {
    use smtp_exporter::dns::{DnsFailure, DnsSettings, Family, Resolver};
    let dns = FakeDns::start(45).await;
    dns.add("mx-only.example.test", Rr::Mx(10, "mx.example.test".into()));
    let settings = DnsSettings { nameservers: vec![dns.addr], attempts: 1, ..DnsSettings::default() };
    let resolver = Resolver::new(&settings).unwrap();
    for (name, failure) in
        [("nx.example.test", DnsFailure::Nxdomain), ("mx-only.example.test", DnsFailure::NoRecords)]
    {
        let e = resolver.addresses(name, Family::Ip4).await.unwrap_err();
        assert_eq!((e.failure, e.ttl), (failure, Duration::from_secs(45)), "{name}: {e:?}");
    }
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let settings = DnsSettings {
        nameservers: vec![closed],
        attempts: 1,
        timeout: Duration::from_millis(300),
        ..DnsSettings::default()
    };
    let e = Resolver::new(&settings).unwrap().addresses("mx.example.test", Family::Ip4).await.unwrap_err();
    assert_eq!(e.failure, DnsFailure::Timeout, "a name server that is not there: {e:?}");
}

/// Issue 17: when a walk meets a transient failure (SERVFAIL) for an MX's addresses, the
/// specs the last good walk made for that MX stay scheduled and keep probing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_keeps_probing_what_the_last_walk_found() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(1).await;
    dns.add("keep.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("mx1.example.test", Rr::Addr(ip("127.0.0.1")));
    let yaml = format!(
        "interval: 1s\ndns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n  - name: keep.example.test\n    ports: [{{ port: {}, module: relay }}]\n    policy: {{ enabled: false, dane: false }}\n",
        dns.addr,
        server.port()
    );
    let exporter = InProcess::start(yaml, "keep.yml").await;
    let keep = [("target", "keep.example.test"), ("mx", "mx1.example.test"), ("address", "127.0.0.1")];
    let walked = |s: &[testkit::exposition::Sample]| {
        find(s, "smtp_domain_last_walk_timestamp_seconds", &[("domain", "keep.example.test")])
            .first()
            .map(|x| x.value)
    };
    let first = exporter
        .scrape_until(Duration::from_secs(10), "the MX probed", |s| {
            find(s, "smtp_probe_success", &keep).len() == 1
        })
        .await;
    let first_walk = walked(&first).unwrap();
    dns.set_behaviour("mx1.example.test", Dns::Servfail);
    let after = exporter
        .scrape_until(Duration::from_secs(10), "a walk that met SERVFAIL", |s| {
            walked(s).is_some_and(|t| t > first_walk)
                && !find(
                    s,
                    "smtp_domain_dns_failure_info",
                    &[("domain", "keep.example.test"), ("reason", "servfail")],
                )
                .is_empty()
        })
        .await;
    assert_eq!(value(&after, "smtp_probe_success", &keep), 1.0, "the last walk's spec is still probed");
    let probes = value(&after, "smtp_probes_total", &keep);
    let later = exporter
        .scrape_until(Duration::from_secs(10), "more probes", |s| {
            value(s, "smtp_probes_total", &keep) > probes
        })
        .await;
    assert_eq!(value(&later, "smtp_probe_success", &keep), 1.0);
    exporter.stop().await;
}

/// Issue 17: a negative answer's own TTL (the SOA minimum) bounds the walk's like any
/// record's: an MX without AAAA records, whose absence may be cached for 1 s, is walked
/// again after about 1 s although its other records last 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_negative_ttl_brings_the_next_walk_forward() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(60).await;
    dns.set_negative_ttl(1);
    dns.add("neg.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("mx1.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("four.example.test", Rr::Mx(10, "mx4.example.test".into()))
        .add("mx4.example.test", Rr::Addr(ip("127.0.0.1")));
    let yaml = format!(
        "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n  - name: neg.example.test\n    ports: [{{ port: {port}, module: relay }}]\n    policy: {{ enabled: false, dane: false }}\n  - name: four.example.test\n    ip_protocol: ip4\n    ports: [{{ port: {port}, module: relay }}]\n    policy: {{ enabled: false, dane: false }}\n",
        dns.addr,
        port = server.port()
    );
    let exporter = InProcess::start(yaml, "negative.yml").await;
    let walked = |s: &[testkit::exposition::Sample]| last_walk(s, "neg.example.test");
    let first = exporter
        .scrape_until(Duration::from_secs(10), "both domains walked", |s| {
            walked(s).is_some()
                && !find(s, "smtp_domain_last_walk_timestamp_seconds", &[("domain", "four.example.test")])
                    .is_empty()
        })
        .await;
    let aaaa = [("domain", "neg.example.test"), ("name", "mx1.example.test"), ("type", "aaaa")];
    assert_eq!(find(&first, "smtp_domain_dns_lookup_seconds", &aaaa).len(), 1, "the AAAA lookup was made");
    // Each lookup is named by its own type: an IPv4-only domain makes one, of type a.
    let four = find(&first, "smtp_domain_dns_lookup_seconds", &[("domain", "four.example.test")]);
    let kinds: Vec<_> = four.iter().map(|x| (x.labels["name"].as_str(), x.labels["type"].as_str())).collect();
    assert_eq!(kinds, [("four.example.test", "mx"), ("mx4.example.test", "a")]);
    second_walk(&exporter, walked, walked(&first).unwrap()).await;
    exporter.stop().await;
}

/// Issue 17: a change of the zone is handed to the scheduler by the walk that sees it,
/// not by the one after: with walks 5 s apart, the new MX is probed before the next walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_change_is_probed_from_the_walk_that_sees_it() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(5).await;
    dns.add("moving.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("mx1.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("mx2.example.test", Rr::Addr(ip("127.0.0.1")));
    let yaml = format!(
        "interval: 1s\ndns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n  - name: moving.example.test\n    ip_protocol: ip4\n    ports: [{{ port: {}, module: relay }}]\n    policy: {{ enabled: false, dane: false }}\n",
        dns.addr,
        server.port()
    );
    let exporter = InProcess::start(yaml, "moving.yml").await;
    let domain = [("domain", "moving.example.test")];
    let mx2 = [("target", "moving.example.test"), ("mx", "mx2.example.test")];
    exporter
        .scrape_until(Duration::from_secs(10), "mx1 probed", |s| {
            find(s, "smtp_probe_success", &[("mx", "mx1.example.test")]).len() == 1
        })
        .await;
    dns.add("moving.example.test", Rr::Mx(20, "mx2.example.test".into()));
    let seen = exporter
        .scrape_until(Duration::from_secs(15), "a walk that found mx2", |s| {
            find(s, "smtp_domain_mx_info", &[domain[0], ("mx", "mx2.example.test")]).len() == 1
        })
        .await;
    let walk = value(&seen, "smtp_domain_last_walk_timestamp_seconds", &domain);
    let probed = exporter
        .scrape_until(Duration::from_secs(15), "mx2 probed", |s| {
            !find(s, "smtp_probe_success", &mx2).is_empty()
        })
        .await;
    assert_eq!(
        value(&probed, "smtp_domain_last_walk_timestamp_seconds", &domain),
        walk,
        "mx2 was probed only after a later walk"
    );
    exporter.stop().await;
}

/// Issue 17: an IP literal is its own answer in its family and no record in the other;
/// a name with more addresses than are probed keeps as many as are probed, of its own.
#[tokio::test]
async fn literals_answer_themselves_and_long_answers_keep_the_first_addresses() {
    use smtp_exporter::dns::{DnsFailure, DnsSettings, Family, Resolver, MAX_ADDRESSES_PER_FAMILY};
    let dns = FakeDns::start(60).await;
    let many: Vec<std::net::IpAddr> =
        (1..=MAX_ADDRESSES_PER_FAMILY + 2).map(|i| ip(&format!("127.0.1.{i}"))).collect();
    for address in &many {
        dns.add("many.example.test", Rr::Addr(*address));
    }
    let settings = DnsSettings { nameservers: vec![dns.addr], ..DnsSettings::default() };
    let resolver = Resolver::new(&settings).unwrap();
    for (host, family, want) in [
        ("127.0.0.1", Family::Ip4, Some(ip("127.0.0.1"))),
        ("[::1]", Family::Ip6, Some(ip("::1"))),
        ("127.0.0.1", Family::Ip6, None),
        ("::1", Family::Ip4, None),
    ] {
        match (resolver.addresses(host, family).await, want) {
            (Ok(answer), Some(want)) => assert_eq!(answer.value, vec![want], "{host}"),
            (Err(e), None) => assert_eq!(e.failure, DnsFailure::NoRecords, "{host}"),
            (other, _) => panic!("{host} {family:?}: {other:?}"),
        }
    }
    let answer = resolver.addresses("many.example.test", Family::Ip4).await.unwrap();
    assert_eq!(answer.value.len(), MAX_ADDRESSES_PER_FAMILY, "{:?}", answer.value);
    assert!(answer.value.iter().all(|a| many.contains(a)), "{:?}", answer.value);
}

/// Issue 14: a domain checks DANE by default: the walk looks the TLSA records of each MX
/// up at `_PORT._tcp.MX` with DNSSEC validation. From a server that gives no DNSSEC answer
/// (this fake one, unsigned), records are not secure: the status says indeterminate, and no
/// spec carries them, so no match is judged. `policy: { dane: false }` makes no TLSA query
/// at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlsa_records_of_an_unsigned_zone_are_reported_and_not_used() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let port = server.port();
    let dns = FakeDns::start(60).await;
    let tlsa_name = format!("_{port}._tcp.mx1.example.test");
    dns.add("dane.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("off.example.test", Rr::Mx(10, "mx1.example.test".into()))
        .add("mx1.example.test", Rr::Addr(ip("127.0.0.1")))
        .add(&tlsa_name, Rr::Tlsa(3, 1, 1, vec![7; 32]));
    let yaml = format!(
        "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n  - name: dane.example.test\n    ports: [{{ port: {port}, module: relay }}]\n  - name: off.example.test\n    ports: [{{ port: {port}, module: relay }}]\n    policy: {{ dane: false }}\n",
        dns.addr
    );
    let exporter = InProcess::start(yaml, "dane.yml").await;
    let samples = exporter
        .scrape_until(Duration::from_secs(10), "both domains probed", |s| {
            find(s, "smtp_domain_deliverable", &[]).len() == 2
                && find(s, "smtp_probe_success", &[]).len() == 2
        })
        .await;
    let mx = [("domain", "dane.example.test"), ("mx", "mx1.example.test")];
    let status = find(&samples, "smtp_domain_dane_status_info", &mx);
    assert_eq!(status.len(), 1, "{status:?}");
    let said = status[0].labels["status"].clone();
    // Issue 25: the fake server gives no DNSSEC answer (its root has no signed DNSKEY), so
    // no verdict can be had through it: indeterminate, never bogus, and DANE not judged;
    // the name server's state is its own series.
    assert_eq!(said, "indeterminate");
    assert!(find(&samples, "smtp_domain_dane_failure_info", &[]).is_empty());
    assert_eq!(
        value(&samples, "smtp_exporter_dns_dnssec_capable", &[("server", &dns.addr.to_string())]),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "smtp_domain_dnssec_status_info",
            &[("domain", "dane.example.test"), ("status", "indeterminate")]
        ),
        1.0
    );
    assert_eq!(value(&samples, "smtp_domain_deliverable", &[("domain", "dane.example.test")]), 1.0);
    assert_eq!(value(&samples, "smtp_domain_dane_usable_records", &mx), 0.0);
    assert!(find(&samples, "smtp_domain_dane_match", &[]).is_empty());
    let lookups = find(&samples, "smtp_domain_dns_lookup_seconds", &[("type", "tlsa")]);
    assert_eq!(lookups.len(), 1, "one TLSA lookup, for dane.example.test only: {lookups:?}");
    assert_eq!(lookups[0].labels["name"], tlsa_name);
    assert!(find(&samples, "smtp_domain_dane_status_info", &[("domain", "off.example.test")]).is_empty());
    // The unproven TLSA answer keeps its own TTL: the walk keeps the records' 60 s instead
    // of walking again after min_ttl (1 s here).
    let walked = |s: &[testkit::exposition::Sample]| {
        value(s, "smtp_domain_last_walk_timestamp_seconds", &[("domain", "dane.example.test")])
    };
    let first = walked(&samples);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(walked(&exporter.scrape().await), first, "walked again within 1.5 s");
    exporter.stop().await;
}

/// Issue 25: an MX that names an address (`MX 10 127.0.0.1.`) is not a host name: senders
/// skip it (Postfix) or refuse it (Exim), so the walk does not probe it. Beside a real MX,
/// mail goes through the other; alone, the domain's DNS fails as `mx_ip_literal`, and
/// `check` gives a verdict that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_that_names_an_address_is_not_used() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let port = server.port();
    let dns = FakeDns::start(60).await;
    dns.add("mixed.example.test", Rr::Mx(10, "127.0.0.1".into()))
        .add("mixed.example.test", Rr::Mx(20, "mx2.example.test".into()))
        .add("mx2.example.test", Rr::Addr(ip("127.0.0.1")))
        .add("literal.example.test", Rr::Mx(10, "127.0.0.1".into()));
    let yaml = format!(
        "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n  - name: mixed.example.test\n    ports: [{{ port: {port}, module: relay }}]\n  - name: literal.example.test\n    ports: [{{ port: {port}, module: relay }}]\n",
        dns.addr
    );
    let exporter = InProcess::start(yaml, "literal.yml").await;
    let samples = exporter
        .scrape_until(Duration::from_secs(10), "both domains walked, mixed probed", |s| {
            find(s, "smtp_domain_deliverable", &[]).len() == 2
                && !find(s, "smtp_probe_success", &[("target", "mixed.example.test")]).is_empty()
        })
        .await;
    let domain = |name: &str, family: &str| value(&samples, family, &[("domain", name)]);
    assert_eq!(domain("mixed.example.test", "smtp_domain_deliverable"), 1.0);
    // The skipped MX of preference 10 is nobody's primary: mx2 at 20 is.
    assert_eq!(domain("mixed.example.test", "smtp_domain_primary_deliverable"), 1.0);
    assert_eq!(domain("literal.example.test", "smtp_domain_deliverable"), 0.0);
    assert_eq!(
        value(
            &samples,
            "smtp_domain_dns_failure_info",
            &[("domain", "literal.example.test"), ("reason", "mx_ip_literal")]
        ),
        1.0
    );
    // Only mx2 is probed: one spec, whose mx label is mx2.
    let probes = find(&samples, "smtp_probe_success", &[]);
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0].labels["mx"], "mx2.example.test");
    exporter.stop().await;

    let mut args = check_args("literal.example.test", &dns, port, false);
    args.mx = true;
    let output = smtp_exporter::check::run(&args).await.unwrap();
    assert!(!output.any_success, "{}", output.text);
    assert!(
        output.text.contains(
            "mail to literal.example.test cannot be delivered: its DNS fails (mx_ip_literal: MX 10 127.0.0.1 names an address, not a host: senders do not use it)."
        ),
        "{}",
        output.text
    );
    assert!(output.text.contains("skipped  an address, not a host"), "{}", output.text);
    let output =
        smtp_exporter::check::run(&check_args("mixed.example.test", &dns, port, false)).await.unwrap();
    assert!(output.any_success, "{}", output.text);
    assert!(
        output.text.contains(
            "mail to mixed.example.test is delivered via mx2.example.test (IPv4 only): 127.0.0.1 names an address, not a host, and is skipped by senders."
        ),
        "{}",
        output.text
    );
}

/// A TLSA answer's own negative TTL (NXDOMAIN, with an SOA minimum of 1 s) brings the next
/// walk forward as an address answer's does, while every record holds for 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_negative_ttl_of_a_tlsa_answer_brings_the_next_walk_forward() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(60).await;
    dns.set_negative_ttl(1);
    dns.add("tlsa.example.test", Rr::Mx(10, "mx5.example.test".into()))
        .add("mx5.example.test", Rr::Addr(ip("127.0.0.1")));
    let yaml = format!(
        "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n  - name: tlsa.example.test\n    ip_protocol: ip4\n    ports: [{{ port: {port}, module: relay }}]\n",
        dns.addr,
        port = server.port()
    );
    let exporter = InProcess::start(yaml, "negative-tlsa.yml").await;
    let walked = |s: &[testkit::exposition::Sample]| last_walk(s, "tlsa.example.test");
    let first =
        exporter.scrape_until(Duration::from_secs(10), "the domain walked", |s| walked(s).is_some()).await;
    let tlsa =
        find(&first, "smtp_domain_dns_lookup_seconds", &[("domain", "tlsa.example.test"), ("type", "tlsa")]);
    assert_eq!(tlsa.len(), 1, "the TLSA lookup was made");
    second_walk(&exporter, walked, walked(&first).unwrap()).await;
    exporter.stop().await;
}

/// When the exporter says `domain` was last walked.
fn last_walk(samples: &[testkit::exposition::Sample], domain: &str) -> Option<f64> {
    find(samples, "smtp_domain_last_walk_timestamp_seconds", &[("domain", domain)]).first().map(|x| x.value)
}

/// Waits for a walk after `first_walk` (as `walked` reads it): with `min_ttl: 1s` and a
/// negative TTL of 1 s, it comes well before the 60 s records expire.
async fn second_walk(
    exporter: &InProcess,
    walked: impl Fn(&[testkit::exposition::Sample]) -> Option<f64>,
    first_walk: f64,
) {
    exporter
        .scrape_until(Duration::from_secs(10), "a second walk, well before the 60 s records expire", |s| {
            walked(s).is_some_and(|t| t > first_walk)
        })
        .await;
}
