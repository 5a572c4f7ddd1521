//! Probe walk tests against the fake SMTP server: each test names the behaviour it guards.

use std::time::Duration;

use smtp_exporter::probe::expect::Check;
use smtp_exporter::probe::{self, Phase, PortState, ProbeReport, Reason};

use crate::support::{assert_failed, phases, spec, spec_expecting};
use testkit::pki::TestPki;
use testkit::smtp::{Behaviour, FakeSmtp};

const CREDS: &str = "auth: { username: probe@example.test, password: correct horse }";

async fn probe_with(behaviour: Behaviour, module: &str) -> (ProbeReport, FakeSmtp, TestPki) {
    let pki = TestPki::new();
    let server = FakeSmtp::start(behaviour, &pki).await;
    let module = module
        .replace("{ca}", &pki.ca_file.display().to_string())
        .replace("{other_ca}", &pki.other_ca_file.display().to_string());
    let spec = spec(&module, server.port());
    let report = probe::run(&spec).await;
    (report, server, pki)
}

#[tokio::test]
async fn starttls_required_with_auth_runs_every_phase() {
    let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, server, _pki) = probe_with(Behaviour::default(), &module).await;
    assert!(report.success(), "{:?}", report.failure);
    use Phase::*;
    assert_eq!(
        phases(&report),
        vec![Resolve, Connect, Banner, Ehlo, Starttls, TlsHandshake, EhloTls, Auth, Quit]
    );
    assert!(report.phases.iter().all(|(_, d)| *d > Duration::ZERO));
    assert_eq!(report.banner_code, Some(220));
    assert_eq!(report.banner_hostname.as_deref(), Some("fake.example.test"));
    assert_eq!(report.auth_success, Some(true));
    let tls = report.tls.as_ref().expect("tls info");
    assert_eq!(tls.version, "TLS1.3");
    assert!(tls.leaf_not_after.is_some());
    assert!(report.ehlo.as_ref().unwrap().starttls());
    assert_eq!(report.ehlo_tls.as_ref().unwrap().auth_mechanisms, vec!["PLAIN", "LOGIN"]);
    let seen = server.wait_for_connections(1).await;
    assert_eq!(seen[0].auth_over_tls, Some(true));
    assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn implicit_tls_with_auth_has_no_starttls_or_ehlo_tls() {
    let behaviour = Behaviour { implicit_tls: true, ..Behaviour::default() };
    let module = format!("tls: implicit\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, _server, _pki) = probe_with(behaviour, &module).await;
    assert!(report.success(), "{:?}", report.failure);
    use Phase::*;
    assert_eq!(phases(&report), vec![Resolve, Connect, TlsHandshake, Banner, Ehlo, Auth, Quit]);
}

#[tokio::test]
async fn opportunistic_starttls_upgrades_when_offered() {
    let module = format!("tls: starttls\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, _server, _pki) = probe_with(Behaviour::default(), &module).await;
    assert!(report.success(), "{:?}", report.failure);
    assert!(phases(&report).contains(&Phase::TlsHandshake));
}

#[tokio::test]
async fn opportunistic_starttls_goes_on_in_plain_text_when_not_offered() {
    let behaviour = Behaviour { starttls: false, ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert!(report.success(), "{:?}", report.failure);
    use Phase::*;
    assert_eq!(phases(&report), vec![Resolve, Connect, Banner, Ehlo, Quit]);
    assert!(report.tls.is_none());
}

#[tokio::test]
async fn plain_mode_with_explicitly_allowed_plaintext_auth() {
    let behaviour = Behaviour { auth_before_tls: true, ..Behaviour::default() };
    let module = "tls: none\nauth: { username: probe@example.test, password: correct horse, allow_plaintext: true, mechanism: login }";
    let (report, server, _pki) = probe_with(behaviour, module).await;
    assert!(report.success(), "{:?}", report.failure);
    use Phase::*;
    assert_eq!(phases(&report), vec![Resolve, Connect, Banner, Ehlo, Auth, Quit]);
    let seen = server.wait_for_connections(1).await;
    assert_eq!(seen[0].auth_over_tls, Some(false));
    assert!(seen[0].lines.iter().any(|l| l == "AUTH LOGIN"));
}

#[tokio::test]
async fn starttls_required_but_not_advertised() {
    let behaviour = Behaviour { starttls: false, ..Behaviour::default() };
    let (report, server, _pki) = probe_with(behaviour, &format!("tls: starttls_required\n{CREDS}")).await;
    assert_failed(&report, Phase::Starttls, Reason::StarttlsUnavailable);
    // The password was never sent, and the probe said goodbye politely.
    let seen = server.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().all(|l| !l.starts_with("AUTH")), "{:?}", seen[0].lines);
    assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn opportunistic_starttls_never_sends_credentials_in_clear() {
    let behaviour = Behaviour { starttls: false, auth_before_tls: true, ..Behaviour::default() };
    let (report, server, _pki) = probe_with(behaviour, &format!("tls: starttls\n{CREDS}")).await;
    assert_failed(&report, Phase::Auth, Reason::AuthPlaintextRefused);
    let seen = server.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().all(|l| !l.starts_with("AUTH")), "{:?}", seen[0].lines);
}

#[tokio::test]
async fn banner_421_is_reply_4xx_in_banner() {
    let behaviour =
        Behaviour { greeting: b"421 4.3.2 too busy, try later\r\n".to_vec(), ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert_failed(&report, Phase::Banner, Reason::Reply4xx);
    assert_eq!(report.banner_code, Some(421));
}

#[tokio::test]
async fn banner_554_is_reply_5xx() {
    let behaviour =
        Behaviour { greeting: b"554 5.7.1 no service for you\r\n".to_vec(), ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert_failed(&report, Phase::Banner, Reason::Reply5xx);
}

#[tokio::test]
async fn wrong_password_is_auth_failed() {
    let module = "tls: starttls_required\ntls_config: { ca_file: {ca} }\nauth: { username: probe@example.test, password: wrong }";
    let (report, server, _pki) = probe_with(Behaviour::default(), module).await;
    assert_failed(&report, Phase::Auth, Reason::AuthFailed);
    assert_eq!(report.auth_success, Some(false));
    // Nothing the server could echo back reaches the failure detail.
    assert!(!report.failure.as_ref().unwrap().detail.contains("wrong"));
    let seen = server.wait_for_connections(1).await;
    assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"), "polite QUIT after a failure");
}

#[tokio::test]
async fn auth_454_is_temporary_and_538_wants_tls() {
    for (reply, reason) in [
        ("454 4.7.0 Temporary authentication failure", Reason::AuthTemporary),
        ("538 5.7.11 Encryption required", Reason::AuthRequiredTls),
    ] {
        let behaviour = Behaviour { auth_reply_override: Some(reply.into()), ..Behaviour::default() };
        let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
        let (report, _server, _pki) = probe_with(behaviour, &module).await;
        assert_failed(&report, Phase::Auth, reason);
    }
}

#[tokio::test]
async fn no_common_auth_mechanism() {
    let behaviour = Behaviour { auth_mechanisms: vec!["GSSAPI"], ..Behaviour::default() };
    let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, _server, _pki) = probe_with(behaviour, &module).await;
    assert_failed(&report, Phase::Auth, Reason::AuthMechanismUnavailable);
}

#[tokio::test]
async fn slow_banner_times_out_in_banner() {
    let behaviour = Behaviour { greeting_delay: Duration::from_secs(5), ..Behaviour::default() };
    let (report, _server, _pki) =
        probe_with(behaviour, "tls: starttls\ntimeout: 2s\nphase_timeout: 300ms").await;
    assert_failed(&report, Phase::Banner, Reason::Timeout);
    assert_eq!(report.port_state(), PortState::Silent);
    // A deadline never fires early; how late it fires depends on the machine's load, so the
    // upper bound only tells the phase's 300 ms from the probe's 2 s.
    let banner = report.phase(Phase::Banner).unwrap();
    assert!(
        banner >= Duration::from_millis(300) && banner < Duration::from_millis(1500),
        "banner took {banner:?}"
    );
    assert!(report.failure.as_ref().unwrap().detail.starts_with("phase timeout"), "{:?}", report.failure);
}

#[tokio::test]
async fn overall_timeout_caps_the_phases() {
    // Each phase may take 1s, but the probe only 400ms: the banner hits the probe deadline.
    let behaviour = Behaviour { greeting_delay: Duration::from_secs(5), ..Behaviour::default() };
    let (report, _server, _pki) =
        probe_with(behaviour, "tls: starttls\ntimeout: 400ms\nphase_timeout: 400ms").await;
    assert_failed(&report, Phase::Banner, Reason::Timeout);
    assert!(report.duration < Duration::from_millis(800), "{:?}", report.duration);
}

#[tokio::test]
async fn garbage_greeting_is_a_protocol_failure() {
    let behaviour =
        Behaviour { greeting: b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n".to_vec(), ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert_failed(&report, Phase::Banner, Reason::Protocol);
}

#[tokio::test]
async fn endless_greeting_line_is_cut_off() {
    let mut greeting = b"220 ".to_vec();
    greeting.extend(std::iter::repeat_n(b'x', 100_000));
    let behaviour = Behaviour { greeting, ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert_failed(&report, Phase::Banner, Reason::Protocol);
}

#[tokio::test]
async fn close_mid_reply_is_closed_in_banner() {
    let behaviour = Behaviour {
        greeting: b"220-fake.example.test first line\r\n220-second li".to_vec(),
        close_after_greeting: true,
        ..Behaviour::default()
    };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert_failed(&report, Phase::Banner, Reason::Closed);
    assert_eq!(report.port_state(), PortState::ClosedEarly);
}

#[tokio::test]
async fn untrusted_certificate_is_tls_cert_invalid() {
    // Bundled public roots do not know the test CA.
    let (report, _server, _pki) = probe_with(Behaviour::default(), "tls: starttls_required").await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    // Against an unrelated private CA too.
    let (report, _server, _pki) =
        probe_with(Behaviour::default(), "tls: starttls_required\ntls_config: { ca_file: {other_ca} }").await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    // And insecure_skip_verify accepts it.
    let (report, _server, _pki) = probe_with(
        Behaviour::default(),
        "tls: starttls_required\ntls_config: { insecure_skip_verify: true }",
    )
    .await;
    assert!(report.success(), "{:?}", report.failure);
}

#[tokio::test]
async fn wrong_server_name_is_tls_cert_invalid() {
    let (report, _server, _pki) = probe_with(
        Behaviour::default(),
        "tls: implicit\ntls_config: { ca_file: {ca}, server_name: mail.example.org }",
    )
    .await;
    // The fake server speaks plain SMTP here, so this also covers "TLS to a plain port":
    // its greeting is not a TLS record.
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsHandshake);
    assert!(report.failure.as_ref().unwrap().detail.contains("corrupt"), "{:?}", report.failure);
    let behaviour = Behaviour { implicit_tls: true, ..Behaviour::default() };
    let (report, _server, _pki) =
        probe_with(behaviour, "tls: implicit\ntls_config: { ca_file: {ca}, server_name: mail.example.org }")
            .await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
}

#[tokio::test]
async fn bytes_injected_after_starttls_fail_the_probe() {
    let behaviour = Behaviour { starttls_injection: b"250 injected\r\n".to_vec(), ..Behaviour::default() };
    let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, _server, _pki) = probe_with(behaviour, &module).await;
    assert_failed(&report, Phase::Starttls, Reason::StarttlsInjection);
}

#[tokio::test]
async fn multi_line_greeting_is_read_whole_before_ehlo() {
    let behaviour = Behaviour {
        greeting: b"220-fake.example.test ESMTP postscreen\r\n".to_vec(),
        greeting_rest: b"220 fake.example.test ready\r\n".to_vec(),
        greeting_split_delay: Duration::from_millis(100),
        ..Behaviour::default()
    };
    let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, server, _pki) = probe_with(behaviour, &module).await;
    assert!(report.success(), "{:?}", report.failure);
    let seen = server.wait_for_connections(1).await;
    assert!(!seen[0].early_bytes, "the client wrote before the greeting was complete");
    assert!(report.phase(Phase::Banner).unwrap() >= Duration::from_millis(100));
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo() {
    let behaviour = Behaviour {
        ehlo_reply_override: Some("502 5.5.1 EHLO not implemented".into()),
        ..Behaviour::default()
    };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert!(report.success(), "{:?}", report.failure);
    assert!(report.helo_fallback);
}

#[tokio::test]
async fn bare_lf_replies_are_tolerated_and_counted() {
    let behaviour = Behaviour {
        bare_lf: true,
        greeting: b"220 sloppy.example.test\n".to_vec(),
        starttls: false,
        ..Behaviour::default()
    };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert!(report.success(), "{:?}", report.failure);
    // The greeting, the EHLO reply's lines and QUIT's 221, each ended by a bare LF.
    assert_eq!(report.bare_lf_lines, 6, "counted {}", report.bare_lf_lines);
}

#[tokio::test]
async fn nothing_listening_is_refused_in_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let report = probe::run(&spec("tls: starttls", port)).await;
    assert_failed(&report, Phase::Connect, Reason::Refused);
    assert_eq!(report.port_state(), PortState::Refused);
    assert!(report.duration < Duration::from_secs(1));
}

/// Names are looked up by the exporter's own resolver, at the name server the
/// configuration names; each way a lookup fails has its own reason in the resolve phase.
#[tokio::test]
async fn lookups_fail_with_their_own_reasons() {
    use testkit::dns::{Behaviour, FakeDns, Rr};
    let dns = FakeDns::start(60).await;
    dns.add("v4only.example.test", Rr::Addr("127.0.0.1".parse().unwrap()));
    dns.add("broken.example.test", Rr::Addr("127.0.0.1".parse().unwrap()));
    dns.set_behaviour("broken.example.test", Behaviour::Servfail);
    dns.add("silent.example.test", Rr::Addr("127.0.0.1".parse().unwrap()));
    dns.set_behaviour("silent.example.test", Behaviour::Silent);
    let cases = [
        ("no-such-host.example.test", "auto", Reason::DnsNxdomain),
        ("v4only.example.test", "ip6", Reason::DnsNoRecords),
        ("broken.example.test", "auto", Reason::DnsServfail),
        ("silent.example.test", "auto", Reason::DnsTimeout),
    ];
    for (host, family, want) in cases {
        let yaml = format!(
            "dns: {{ nameservers: [\"{}\"], timeout: 300ms, attempts: 1 }}\nmodules: {{ m: {{ tls: starttls, ip_protocol: {family} }} }}\ntargets:\n  - host: {host}\n    ports: [{{ port: 25, module: m }}]\n",
            dns.addr
        );
        let config = smtp_exporter::config::parse(&yaml, "t").unwrap();
        let report = probe::run(&config.schedule[0].spec).await;
        assert_failed(&report, Phase::Resolve, want);
        assert_eq!(report.port_state(), PortState::Unresolved);
        assert!(report.duration < Duration::from_secs(3), "{host}: {:?}", report.duration);
    }
    // An address of the family asked is connected to: the probe gets as far as connect.
    let yaml = format!(
        "dns: {{ nameservers: [\"{}\"] }}\nmodules: {{ m: {{ tls: starttls, ip_protocol: ip4 }} }}\ntargets:\n  - host: v4only.example.test\n    ports: [{{ port: 1, module: m }}]\n",
        dns.addr
    );
    let config = smtp_exporter::config::parse(&yaml, "t").unwrap();
    let report = probe::run(&config.schedule[0].spec).await;
    assert_eq!(report.peer, Some("127.0.0.1:1".parse().unwrap()));
    assert_failed(&report, Phase::Connect, Reason::Refused);
}

/// The session runs over any stream: here an in-memory pipe, no socket at all.
#[tokio::test]
async fn session_over_an_in_memory_stream() {
    let pki = TestPki::new();
    let (client, server) = tokio::io::duplex(4096);
    let serve = tokio::spawn(testkit::smtp::serve(server, Behaviour::default(), pki.acceptor()));
    let module =
        format!("tls: starttls_required\ntls_config: {{ ca_file: {} }}\n{CREDS}", pki.ca_file.display());
    let spec = spec(&module, 25);
    let report = probe::run_on_stream(&spec, Box::new(client)).await;
    assert!(report.success(), "{:?}", report.failure);
    use Phase::*;
    assert_eq!(phases(&report), vec![Banner, Ehlo, Starttls, TlsHandshake, EhloTls, Auth, Quit]);
    let seen = serve.await.unwrap();
    assert_eq!(seen.auth_over_tls, Some(true));
}

/// Measured accuracy: the banner phase matches the server's own measurement of how long
/// it held the greeting back, within a few milliseconds.
#[tokio::test]
async fn banner_timing_matches_the_injected_delay() {
    // The best of five tries must be within -1 to +5 ms: a systematic error (a phase that
    // took in the connect, a late clock) shows in all five, a busy machine's hiccup in one.
    for delay_ms in [20u64, 100] {
        let mut errors = Vec::new();
        for _ in 0..5 {
            let behaviour = Behaviour {
                greeting_delay: Duration::from_millis(delay_ms),
                starttls: false,
                ..Behaviour::default()
            };
            let (report, server, _pki) = probe_with(behaviour, "tls: starttls").await;
            assert!(report.success(), "{:?}", report.failure);
            let seen = server.wait_for_connections(1).await;
            let server_side = seen[0].greeting_sent_after.unwrap();
            assert!(server_side >= Duration::from_millis(delay_ms));
            let banner = report.phase(Phase::Banner).unwrap();
            errors.push((banner.as_secs_f64() - server_side.as_secs_f64()) * 1e3);
            if (-1.0..5.0).contains(errors.last().unwrap()) {
                break;
            }
        }
        assert!(errors.iter().any(|e| (-1.0..5.0).contains(e)), "{delay_ms} ms: errors {errors:.3?} ms");
    }
}

const EXPECT_REAL: &str =
    "{ banner_hostname: FAKE.example.test, starttls: true, cert_names: [localhost, 127.0.0.1] }";

#[tokio::test]
async fn expectations_hold_for_the_real_server() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let module = format!("tls: starttls\ntls_config: {{ ca_file: {} }}", pki.ca_file.display());
    let report = probe::run(&spec_expecting(&module, server.port(), EXPECT_REAL)).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.starttls_advertised(), Some(true));
    assert_eq!(
        report.expectations,
        vec![(Check::BannerHostname, true), (Check::Starttls, true), (Check::CertNames, true)]
    );
}

/// A "proxy" answering in the server's place, with its own name and no STARTTLS (the
/// ESMTP-inspection middlebox case): every expectation trips, yet the probe itself works.
#[tokio::test]
async fn an_intercepting_proxy_trips_the_expectations() {
    let pki = TestPki::new();
    let proxy = Behaviour {
        greeting: b"220 ********************************\r\n".to_vec(),
        starttls: false,
        ..Behaviour::default()
    };
    let server = FakeSmtp::start(proxy, &pki).await;
    let module = format!("tls: starttls\ntls_config: {{ ca_file: {} }}", pki.ca_file.display());
    let report = probe::run(&spec_expecting(&module, server.port(), EXPECT_REAL)).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.port_state(), PortState::Open);
    assert_eq!(report.starttls_advertised(), Some(false));
    assert_eq!(
        report.expectations,
        vec![(Check::BannerHostname, false), (Check::Starttls, false), (Check::CertNames, false)]
    );
}

/// A refused connection gives no evidence either way: no expectation is reported, so a
/// down server does not also look intercepted.
#[tokio::test]
async fn expectations_without_evidence_are_not_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let report = probe::run(&spec_expecting("tls: starttls", port, EXPECT_REAL)).await;
    assert_eq!(report.port_state(), PortState::Refused);
    assert!(report.expectations.is_empty());
}

// ---------------------------------------------------------------------------------------
// TLS verdicts, AUTH mechanisms, protocol robustness.

use smtp_exporter::tls::CertError;

use testkit::pki::Leaf;

async fn probe_pki(behaviour: Behaviour, pki: &TestPki, module: &str) -> (ProbeReport, FakeSmtp) {
    let server = FakeSmtp::start(behaviour, pki).await;
    let module = module.replace("{ca}", &pki.ca_file.display().to_string());
    let report = probe::run(&spec(&module, server.port())).await;
    (report, server)
}

/// Opportunistic STARTTLS reports an untrusted certificate but does not fail on it, and
/// the certificate is still described.
#[tokio::test]
async fn opportunistic_tls_reports_an_invalid_certificate_without_failing() {
    let (report, _server, _pki) = probe_with(Behaviour::default(), "tls: starttls").await;
    assert!(report.success(), "{:?}", report.failure);
    let tls = report.tls.as_ref().unwrap();
    assert_eq!(tls.cert_error, Some(CertError::UnknownIssuer));
    assert_eq!(tls.subject_cn, "localhost");
    assert_eq!(tls.issuer_cn, "smtp_exporter test CA");
    assert_eq!(tls.fingerprint_sha256.len(), 64);
    assert!(!tls.serial.is_empty());
    assert_eq!(tls.leaf_names, vec!["localhost", "127.0.0.1"]);
    assert!(tls.kx_group.is_some());
}

#[tokio::test]
async fn expired_certificate_is_named_and_fails_where_tls_is_required() {
    let pki = TestPki::with_leaf(Leaf::Expired);
    let (report, server) = probe_pki(
        Behaviour::default(),
        &pki,
        &format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}"),
    )
    .await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    let tls = report.tls.as_ref().expect("the certificate is described even though it failed");
    assert_eq!(tls.cert_error, Some(CertError::Expired));
    assert_eq!(tls.leaf_not_after, Some(1_609_459_200)); // 2021-01-01
    assert_eq!(tls.chain_earliest_not_after, Some(1_609_459_200));
    // The password is never sent on a session whose certificate failed; QUIT is, inside TLS.
    let seen = server.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().all(|l| !l.starts_with("AUTH")), "{:?}", seen[0].lines);
    assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"));

    // The same certificate only reported when the module says so.
    let (report, _server) = probe_pki(
        Behaviour::default(),
        &pki,
        "tls: starttls_required\ntls_config: { ca_file: {ca}, on_invalid_cert: report }",
    )
    .await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.tls.unwrap().cert_error, Some(CertError::Expired));

    // And opportunistic STARTTLS can be made strict.
    let (report, _server) = probe_pki(
        Behaviour::default(),
        &pki,
        "tls: starttls\ntls_config: { ca_file: {ca}, on_invalid_cert: fail }",
    )
    .await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
}

#[tokio::test]
async fn wrong_name_is_name_mismatch() {
    let behaviour = Behaviour { implicit_tls: true, ..Behaviour::default() };
    let (report, _server, _pki) =
        probe_with(behaviour, "tls: implicit\ntls_config: { ca_file: {ca}, server_name: mail.example.org }")
            .await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    assert_eq!(report.tls.unwrap().cert_error, Some(CertError::NameMismatch));
}

#[tokio::test]
async fn a_tls_1_0_only_server_is_tls_unsupported() {
    let behaviour = Behaviour { tls_protocol_version_alert: true, ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: implicit\ntls_config: { ca_file: {ca} }").await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsUnsupported);
}

#[tokio::test]
async fn cram_md5_authenticates() {
    let behaviour = Behaviour { auth_mechanisms: vec!["CRAM-MD5"], ..Behaviour::default() };
    let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, server, _pki) = probe_with(behaviour.clone(), &module).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.auth_reply_code, Some(235));
    let seen = server.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().any(|l| l == "AUTH CRAM-MD5"));

    let module = "tls: starttls_required\ntls_config: { ca_file: {ca} }\nauth: { username: probe@example.test, password: wrong, mechanism: cram_md5 }";
    let (report, _server, _pki) = probe_with(behaviour, module).await;
    assert_failed(&report, Phase::Auth, Reason::AuthFailed);
    assert_eq!(report.auth_reply_code, Some(535));
}

/// XOAUTH2 reads its token file on every probe: a rotated token works without a reload,
/// and a stale one fails with auth_failed after the error challenge.
#[tokio::test]
async fn xoauth2_reads_the_token_file_on_every_probe() {
    let pki = TestPki::new();
    let behaviour = Behaviour { auth_mechanisms: vec!["PLAIN", "XOAUTH2"], ..Behaviour::default() };
    let token = behaviour.xoauth2_token.clone();
    let server = FakeSmtp::start(behaviour, &pki).await;
    let token_file = pki.ca_file.with_file_name("token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let module = format!(
        "tls: starttls_required\ntls_config: {{ ca_file: {} }}\nauth: {{ username: probe@example.test, token_file: {} }}",
        pki.ca_file.display(),
        token_file.display()
    );
    let spec = spec(&module, server.port());
    let report = probe::run(&spec).await;
    assert!(report.success(), "{:?}", report.failure);

    *token.lock().unwrap() = "token-2".into();
    let report = probe::run(&spec).await;
    assert_failed(&report, Phase::Auth, Reason::AuthFailed);
    assert_eq!(report.auth_reply_code, Some(535));

    std::fs::write(&token_file, "token-2\n").unwrap();
    let report = probe::run(&spec).await;
    assert!(report.success(), "rotated token: {:?}", report.failure);

    std::fs::remove_file(&token_file).unwrap();
    let report = probe::run(&spec).await;
    assert_failed(&report, Phase::Auth, Reason::AuthCredentials);
}

#[tokio::test]
async fn a_421_anywhere_is_reply_4xx_in_its_phase() {
    let behaviour =
        Behaviour { ehlo_reply_override: Some("421 4.3.2 shutting down".into()), ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls").await;
    assert_failed(&report, Phase::Ehlo, Reason::Reply4xx);

    let behaviour =
        Behaviour { starttls_reply_override: Some("421 4.3.2 shutting down".into()), ..Behaviour::default() };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls_required").await;
    assert_failed(&report, Phase::Starttls, Reason::Reply4xx);

    let behaviour =
        Behaviour { auth_reply_override: Some("421 4.3.2 shutting down".into()), ..Behaviour::default() };
    let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {{ca}} }}\n{CREDS}");
    let (report, _server, _pki) = probe_with(behaviour, &module).await;
    assert_failed(&report, Phase::Auth, Reason::Reply4xx);
}

#[tokio::test]
async fn starttls_refused_with_454_is_reply_4xx() {
    let behaviour = Behaviour {
        starttls_reply_override: Some("454 4.7.0 TLS not available".into()),
        ..Behaviour::default()
    };
    let (report, _server, _pki) = probe_with(behaviour, "tls: starttls_required").await;
    assert_failed(&report, Phase::Starttls, Reason::Reply4xx);
}

/// Issue 10 item 2: a self-signed certificate made the usual way (`openssl req -x509`, which
/// sets CA:TRUE) and given as the module's `ca_file` is trusted, as OpenSSL and Go trust
/// it; so is one with CA:FALSE. Its name and dates are still checked.
#[tokio::test]
async fn a_self_signed_certificate_in_ca_file_is_trusted_with_its_name_and_dates_checked() {
    let implicit = Behaviour { implicit_tls: true, ..Behaviour::default() };
    for leaf in [Leaf::SelfSignedCa, Leaf::SelfSignedNoCa] {
        let pki = TestPki::with_leaf(leaf);
        let (report, _server) =
            probe_pki(implicit.clone(), &pki, "tls: implicit\ntls_config: { ca_file: {ca} }").await;
        assert!(report.success(), "{:?}", report.failure);
        let tls = report.tls.as_ref().unwrap();
        assert_eq!(tls.cert_error, None, "{:?}", tls.cert_error_detail);

        // The name is still checked.
        let (report, _server) = probe_pki(
            implicit.clone(),
            &pki,
            "tls: implicit\ntls_config: { ca_file: {ca}, server_name: mail.example.org }",
        )
        .await;
        assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
        assert_eq!(report.tls.as_ref().unwrap().cert_error, Some(CertError::NameMismatch));
        let detail = &report.failure.as_ref().unwrap().detail;
        assert!(detail.contains("mail.example.org") && detail.contains("localhost"), "{detail}");
    }
    // And so are its dates.
    let pki = TestPki::with_leaf(Leaf::SelfSignedExpired);
    let (report, _server) = probe_pki(implicit, &pki, "tls: implicit\ntls_config: { ca_file: {ca} }").await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    assert_eq!(report.tls.as_ref().unwrap().cert_error, Some(CertError::Expired));
    let detail = &report.failure.as_ref().unwrap().detail;
    assert!(detail.contains("expired on 2021-01-01"), "{detail}");
}

/// Issue 10 item 2: an untrusted self-signed certificate is `self_signed`, not `other`, and
/// the detail says in words how to trust it; a chain to an unknown root stays
/// `unknown_issuer`.
#[tokio::test]
async fn an_untrusted_self_signed_certificate_is_named_with_the_fix() {
    let implicit = Behaviour { implicit_tls: true, ..Behaviour::default() };
    for leaf in [Leaf::SelfSignedCa, Leaf::SelfSignedNoCa] {
        let pki = TestPki::with_leaf(leaf);
        // The bundled Mozilla roots do not know it.
        let (report, _server) = probe_pki(implicit.clone(), &pki, "tls: implicit").await;
        assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
        assert_eq!(report.tls.as_ref().unwrap().cert_error, Some(CertError::SelfSigned));
        let detail = &report.failure.as_ref().unwrap().detail;
        assert_eq!(
            detail,
            "certificate self_signed: self-signed certificate for localhost, 127.0.0.1; trust it with tls_config.ca_file, or set on_invalid_cert: report"
        );
    }
    let pki = TestPki::new();
    let (report, _server) = probe_pki(implicit, &pki, "tls: implicit").await;
    assert_eq!(report.tls.as_ref().unwrap().cert_error, Some(CertError::UnknownIssuer));
    let detail = &report.failure.as_ref().unwrap().detail;
    assert!(detail.contains("issued by \"smtp_exporter test CA\"") && !detail.contains("Other("), "{detail}");
}

/// Issue 12 finding 5: credentials never go over TLS whose certificate did not verify,
/// unless the module says so (`auth.allow_unverified_tls`); opportunistic STARTTLS reports
/// the certificate by default, which sent them before.
#[tokio::test]
async fn credentials_are_not_sent_over_tls_that_did_not_verify() {
    let (report, server, _pki) = probe_with(Behaviour::default(), &format!("tls: starttls\n{CREDS}")).await;
    assert_failed(&report, Phase::Auth, Reason::AuthTlsUnverified);
    assert_eq!(report.tls.as_ref().unwrap().cert_error, Some(CertError::UnknownIssuer));
    let seen = server.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().all(|l| !l.starts_with("AUTH")), "{:?}", seen[0].lines);
    assert!(
        seen[0].lines.iter().any(|l| l == "QUIT"),
        "a polite QUIT still ends the session: {:?}",
        seen[0].lines
    );

    let module = "tls: starttls\nauth: { username: probe@example.test, password: correct horse, allow_unverified_tls: true }";
    let (report, server, _pki) = probe_with(Behaviour::default(), module).await;
    assert!(report.success(), "{:?}", report.failure);
    let seen = server.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().any(|l| l.starts_with("AUTH")), "{:?}", seen[0].lines);
}

/// A secure TLSA set of one record naming `cert` (DER) by its SPKI or whole certificate.
fn tlsa_of(
    dnssec: smtp_exporter::dns::Dnssec,
    usage: u8,
    selector: u8,
    cert: &[u8],
) -> std::sync::Arc<smtp_exporter::dns::TlsaSet> {
    let selected = match selector {
        0 => cert.to_vec(),
        _ => x509_parser::parse_x509_certificate(cert).unwrap().1.tbs_certificate.subject_pki.raw.to_vec(),
    };
    let data = ring::digest::digest(&ring::digest::SHA256, &selected).as_ref().to_vec();
    let record = smtp_exporter::dane::Tlsa { usage, selector, matching: 1, data };
    std::sync::Arc::new(smtp_exporter::dns::TlsaSet { dnssec, records: vec![record], why: None })
}

async fn probe_with_tlsa(
    pki: &TestPki,
    module: &str,
    tlsa: std::sync::Arc<smtp_exporter::dns::TlsaSet>,
) -> (ProbeReport, FakeSmtp) {
    let server = FakeSmtp::start(Behaviour { implicit_tls: true, ..Behaviour::default() }, pki).await;
    let mut spec = spec(module, server.port());
    spec.tlsa = Some(tlsa);
    (probe::run(&spec).await, server)
}

/// Issue 14, DANE-EE (RFC 7672 §3.1.1): a self-signed leaf that the bundled roots do not
/// know is valid when a secure 3 1 1 record names its key, and the report says which
/// record matched. The same record from an unsigned zone changes nothing, and a stale
/// record (another key) leaves the certificate invalid with no match.
#[tokio::test]
async fn a_dane_ee_match_makes_a_self_signed_leaf_valid_only_when_secure() {
    use smtp_exporter::dns::Dnssec;
    use smtp_exporter::tls::CertError;
    let pki = TestPki::with_leaf(testkit::pki::Leaf::SelfSignedNoCa);
    let (report, _server) =
        probe_with_tlsa(&pki, "tls: implicit", tlsa_of(Dnssec::Secure, 3, 1, &pki.leaf_der)).await;
    assert!(report.success(), "{:?}", report.failure);
    let tls = report.tls.as_ref().unwrap();
    assert_eq!(tls.cert_error, None, "{:?}", tls.cert_error_detail);
    let dane = tls.dane.as_ref().expect("DANE evaluated");
    assert_eq!((dane.usable, dane.matched.as_ref().map(|r| r.parameters())), (1, Some("3 1 1".to_owned())));

    let (report, _server) =
        probe_with_tlsa(&pki, "tls: implicit", tlsa_of(Dnssec::Insecure, 3, 1, &pki.leaf_der)).await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    let tls = report.tls.as_ref().unwrap();
    assert_eq!((tls.cert_error, &tls.dane), (Some(CertError::SelfSigned), &None));

    let stale = TestPki::with_leaf(testkit::pki::Leaf::SelfSignedNoCa);
    let (report, _server) =
        probe_with_tlsa(&pki, "tls: implicit", tlsa_of(Dnssec::Secure, 3, 1, &stale.leaf_der)).await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    let tls = report.tls.as_ref().unwrap();
    assert_eq!(tls.cert_error, Some(CertError::SelfSigned));
    let dane = tls.dane.as_ref().expect("DANE evaluated");
    assert_eq!((dane.usable, &dane.matched), (1, &None));
}

/// Issue 14, DANE-TA (RFC 7672 §3.1.2): a CA named by a secure 2 0 1 record is the trust
/// anchor, so a chain the bundled roots do not know verifies; the leaf's name is still
/// checked below it.
#[tokio::test]
async fn a_dane_ta_match_anchors_the_chain_and_still_checks_the_name() {
    use smtp_exporter::dns::Dnssec;
    use smtp_exporter::tls::CertError;
    let pki = TestPki::with_ca_in_chain();
    let record = tlsa_of(Dnssec::Secure, 2, 0, &pki.ca_der);
    let (report, _server) = probe_with_tlsa(&pki, "tls: implicit", record.clone()).await;
    assert!(report.success(), "{:?}", report.failure);
    let tls = report.tls.as_ref().unwrap();
    assert_eq!(tls.cert_error, None, "{:?}", tls.cert_error_detail);
    assert_eq!(tls.dane.as_ref().unwrap().anchor, Some(1));

    let (report, _server) =
        probe_with_tlsa(&pki, "tls: implicit\ntls_config: { server_name: mx9.example.org }", record).await;
    assert_failed(&report, Phase::TlsHandshake, Reason::TlsCertInvalid);
    assert_eq!(report.tls.as_ref().unwrap().cert_error, Some(CertError::NameMismatch));

    // Without the record, the same chain is an unknown issuer's.
    let server = FakeSmtp::start(Behaviour { implicit_tls: true, ..Behaviour::default() }, &pki).await;
    let report = probe::run(&spec("tls: implicit", server.port())).await;
    assert_eq!(report.tls.as_ref().unwrap().cert_error, Some(CertError::UnknownIssuer));
}

/// Issue 16: every AUTH mechanism's transcript shows the exchange but no credential: not
/// the password, the token, the CRAM-MD5 digest or response, nor the XOAUTH2 payload; a
/// server that echoes a credential back in its reply is redacted too.
#[tokio::test]
async fn transcripts_of_every_mechanism_carry_no_credential() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let pki = TestPki::new();
    let token_file = pki.ca_file.with_file_name("token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let ca = pki.ca_file.display().to_string();
    let cases = [
        (
            vec!["CRAM-MD5"],
            None,
            "auth: { username: probe@example.test, password: correct horse, mechanism: cram_md5 }".to_owned(),
            "C: <redacted response>",
        ),
        (
            vec!["PLAIN", "XOAUTH2"],
            None,
            format!("auth: {{ username: probe@example.test, token_file: {} }}", token_file.display()),
            "C: AUTH XOAUTH2 <redacted>",
        ),
        // A server that says the PLAIN token back in its refusal.
        (
            vec!["PLAIN"],
            Some(format!("535 5.7.8 rejected {}", b64("\0probe@example.test\0correct horse"))),
            CREDS.to_owned(),
            "S: 535 5.7.8 rejected <redacted>",
        ),
    ];
    for (mechanisms, auth_reply_override, auth, shown) in cases {
        let behaviour =
            Behaviour { auth_mechanisms: mechanisms, auth_reply_override, ..Behaviour::default() };
        let server = FakeSmtp::start(behaviour, &pki).await;
        let module = format!("tls: starttls_required\ntls_config: {{ ca_file: {ca} }}\n{auth}");
        let report = probe::run_recorded(&spec(&module, server.port())).await;
        let mut text = String::new();
        report.transcript.as_ref().expect("recorded").render(&mut text);
        assert!(text.contains(shown), "{shown:?} missing:\n{text}");
        for secret in
            ["correct horse", "token-1", &b64("correct horse"), &b64("\0probe@example.test\0correct horse")]
        {
            assert!(!text.contains(secret), "{secret:?} leaked:\n{text}");
        }
        assert!(
            !text.lines().any(|l| l.contains("C: ") && l.len() > 60 && !l.contains("EHLO")),
            "a long line was sent unredacted:\n{text}"
        );
    }
    // An unrecorded probe keeps none.
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    assert!(probe::run(&spec("tls: starttls", server.port())).await.transcript.is_none());
}

/// Issue 17: bare LFs are counted on every path of a session: before STARTTLS (the plain
/// leg, whose session ends at the upgrade), inside TLS, in the courtesy QUIT after a failure
/// that leaves the session usable, and up to a failure that ends it.
#[tokio::test]
async fn bare_lf_lines_are_counted_on_the_starttls_path_and_after_failures() {
    let sloppy =
        |b: Behaviour| Behaviour { bare_lf: true, greeting: b"220 sloppy.example.test\n".to_vec(), ..b };
    // The fake server's EHLO reply is 5 lines on each leg (greeting line, PIPELINING, SIZE,
    // then STARTTLS before TLS or AUTH inside it, 8BITMIME). Plain leg: greeting 1 +
    // EHLO 5 + STARTTLS 1; TLS leg: EHLO 5 + QUIT 1.
    let (report, _server, _pki) = probe_with(sloppy(Behaviour::default()), "tls: starttls").await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.bare_lf_lines, 1 + 5 + 1 + 5 + 1);

    // AUTH refused: the session is still usable, so QUIT is said and its 221 counted:
    // ... + EHLO 5 inside TLS, the 535, and the courtesy QUIT's 221.
    let module = "tls: starttls_required\ntls_config: { ca_file: {ca} }\nauth: { username: probe@example.test, password: wrong }";
    let (report, _server, _pki) = probe_with(sloppy(Behaviour::default()), module).await;
    assert_failed(&report, Phase::Auth, Reason::AuthFailed);
    assert_eq!(report.bare_lf_lines, 1 + 5 + 1 + 5 + 1 + 1);

    // Closed after the greeting: the session is gone, the greeting still counted.
    let (report, _server, _pki) =
        probe_with(sloppy(Behaviour { close_after_greeting: true, ..Behaviour::default() }), "tls: starttls")
            .await;
    assert_failed(&report, Phase::Ehlo, Reason::Closed);
    assert_eq!(report.bare_lf_lines, 1);
}

/// Issue 17: a timeout says which deadline it met: the phase's own, or the probe's.
#[tokio::test]
async fn a_timeout_names_the_deadline_it_met() {
    let slow = Behaviour { greeting_delay: Duration::from_secs(3), ..Behaviour::default() };
    let (report, _server, _pki) =
        probe_with(slow.clone(), "tls: starttls\ntimeout: 2s\nphase_timeout: 300ms").await;
    assert_failed(&report, Phase::Banner, Reason::Timeout);
    assert!(
        report.failure.as_ref().unwrap().detail.starts_with("phase timeout reached after"),
        "{:?}",
        report.failure
    );
    let (report, _server, _pki) = probe_with(slow, "tls: starttls\ntimeout: 300ms").await;
    assert_failed(&report, Phase::Banner, Reason::Timeout);
    assert!(
        report.failure.as_ref().unwrap().detail.starts_with("probe timeout reached after"),
        "{:?}",
        report.failure
    );
}

/// Issue 17: QUIT is said after a failure only when the session is still in step (a
/// refused AUTH), never after one that broke it (a malformed reply): the server sees it in
/// the first case only.
#[tokio::test]
async fn a_courtesy_quit_follows_only_failures_that_leave_the_session_usable() {
    let module = "tls: starttls_required\ntls_config: { ca_file: {ca} }\nauth: { username: probe@example.test, password: wrong }";
    let (report, server, _pki) = probe_with(Behaviour::default(), module).await;
    assert_failed(&report, Phase::Auth, Reason::AuthFailed);
    let seen = server.wait_for_connections(1).await;
    assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"), "{:?}", seen[0].lines);

    let broken =
        Behaviour { ehlo_reply_override: Some("250-ok\r\nthis is not smtp".into()), ..Behaviour::default() };
    let (report, server, _pki) = probe_with(broken, "tls: starttls").await;
    assert_failed(&report, Phase::Ehlo, Reason::Protocol);
    let seen = server.wait_for_connections(1).await;
    assert!(!seen[0].lines.iter().any(|l| l == "QUIT"), "QUIT after a broken session: {:?}", seen[0].lines);
}

/// Issue 15, the envelope check: MAIL FROM, every RCPT TO, then RSET and QUIT, never DATA;
/// each recipient's code is kept, and a recipient meeting its expectation fails nothing.
#[tokio::test]
async fn the_envelope_check_sends_mail_rcpt_and_rset_never_data() {
    let behaviour = Behaviour {
        rcpt_replies: vec![("relay@foreign.example".into(), "554 5.7.1 Relay access denied".into())],
        ..Behaviour::default()
    };
    let module = "tls: starttls\ntls_config: { ca_file: {ca} }\nenvelope:\n  mail_from: monitor@example.test\n  accept: [postmaster@example.test]\n  reject: [relay@foreign.example]";
    let (report, server, _pki) = probe_with(behaviour, module).await;
    assert!(report.success(), "{:?}", report.failure);
    use Phase::*;
    assert_eq!(
        phases(&report),
        vec![Resolve, Connect, Banner, Ehlo, Starttls, TlsHandshake, EhloTls, Envelope, Quit]
    );
    let envelope = report.envelope.as_ref().expect("the envelope outcome");
    assert_eq!(envelope.mail_from, Some(250));
    let codes: Vec<_> =
        envelope.recipients.iter().map(|r| (r.address.as_str(), r.expect.as_str(), r.code)).collect();
    assert_eq!(
        codes,
        vec![
            ("postmaster@example.test", "accept", Some(250)),
            ("relay@foreign.example", "reject", Some(554))
        ]
    );
    let seen = server.wait_for_connections(1).await;
    let after_ehlo: Vec<&str> = seen[0].lines.iter().skip(3).map(String::as_str).collect();
    assert_eq!(
        after_ehlo,
        vec![
            "MAIL FROM:<monitor@example.test>",
            "RCPT TO:<postmaster@example.test>",
            "RCPT TO:<relay@foreign.example>",
            "RSET",
            "QUIT"
        ]
    );
}

/// Issue 15: a relay recipient accepted is `open_relay`, and it outranks a postmaster
/// refused in the same probe; every recipient is still asked, the transaction is reset and
/// the session ends politely.
#[tokio::test]
async fn an_accepted_foreign_recipient_is_an_open_relay() {
    let behaviour = Behaviour {
        rcpt_replies: vec![("postmaster@example.test".into(), "550 5.1.1 no such user".into())],
        ..Behaviour::default()
    };
    let module =
        "tls: none\nenvelope:\n  accept: [postmaster@example.test]\n  reject: [relay@foreign.example]";
    let (report, server, _pki) = probe_with(behaviour, module).await;
    assert_failed(&report, Phase::Envelope, Reason::OpenRelay);
    let detail = &report.failure.as_ref().unwrap().detail;
    assert_eq!(detail, "RCPT TO:<relay@foreign.example>: 250 2.1.5 Ok (expected refusal)");
    let codes: Vec<_> = report.envelope.as_ref().unwrap().recipients.iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![Some(550), Some(250)]);
    let seen = server.wait_for_connections(1).await;
    assert_eq!(seen[0].lines[1], "MAIL FROM:<>", "the null sender by default");
    assert_eq!(seen[0].lines[seen[0].lines.len() - 2..], ["RSET", "QUIT"]);
}

/// Issue 15: a refused or deferred postmaster, and a refused MAIL FROM, each with its
/// reason; after a refused MAIL FROM no recipient is asked.
#[tokio::test]
async fn refused_and_deferred_envelopes_have_their_reasons() {
    let module = "tls: none\nenvelope: { accept: [postmaster@example.test] }";
    let cases = [
        (None, "550 5.1.1 unknown", Reason::EnvelopeRejected, Some(550)),
        (None, "450 4.2.0 greylisted", Reason::EnvelopeDeferred, Some(450)),
        (Some("553 5.1.8 sender refused"), "250 Ok", Reason::EnvelopeRejected, None),
        (Some("451 4.3.0 try later"), "250 Ok", Reason::EnvelopeDeferred, None),
    ];
    for (mail, rcpt, reason, code) in cases {
        let behaviour = Behaviour {
            mail_reply_override: mail.map(str::to_owned),
            rcpt_replies: vec![("postmaster@example.test".into(), rcpt.into())],
            ..Behaviour::default()
        };
        let (report, server, _pki) = probe_with(behaviour, module).await;
        assert_failed(&report, Phase::Envelope, reason);
        let envelope = report.envelope.as_ref().unwrap();
        assert_eq!(envelope.recipients[0].code, code, "{mail:?} {rcpt}");
        let seen = server.wait_for_connections(1).await;
        let rcpts = seen[0].lines.iter().filter(|l| l.starts_with("RCPT")).count();
        assert_eq!(rcpts, usize::from(mail.is_none()), "{mail:?}");
        assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"));
    }
}

/// Issue 15: of two recipients refused alike, the failure names the first; a graver one
/// later still wins.
#[tokio::test]
async fn the_first_of_equally_grave_envelope_failures_is_reported() {
    let behaviour = Behaviour {
        rcpt_replies: vec![
            ("a@example.test".into(), "550 5.1.1 no a".into()),
            ("b@example.test".into(), "550 5.1.1 no b".into()),
        ],
        ..Behaviour::default()
    };
    let module = "tls: none\nenvelope: { accept: [a@example.test, b@example.test] }";
    let (report, _server, _pki) = probe_with(behaviour, module).await;
    assert_failed(&report, Phase::Envelope, Reason::EnvelopeRejected);
    assert_eq!(
        report.failure.as_ref().unwrap().detail,
        "RCPT TO:<a@example.test>: 550 5.1.1 no a (expected acceptance)"
    );
}
