//! Unit tests of `check`: arguments, plans, advice and output.

use super::advice::*;
use super::args::*;
use super::plan::*;
use crate::config::{ProbeSpec, TlsMode};
use crate::probe::Failure;
use crate::probe::{Phase, ProbeReport, Reason};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    check: CheckArgs,
}

/// `check ARGV...` as the command line gives it (the delivery tests use it too).
pub(super) fn parse(argv: &[&str]) -> Result<CheckArgs, String> {
    Cli::try_parse_from(std::iter::once("check").chain(argv.iter().copied()))
        .map(|c| c.check)
        .map_err(|e| e.to_string())
}

fn args(ports: &[&str]) -> CheckArgs {
    let mut argv = vec!["mx.example.test", "--timeout", "5s"];
    for p in ports {
        argv.extend(["--port", p]);
    }
    parse(&argv).unwrap()
}

fn spec_for(args: &CheckArgs, port: u16, mode: TlsMode) -> ProbeSpec {
    Plan::new(args).unwrap().spec(args, port, mode).unwrap()
}

#[test]
fn ports_get_the_mode_they_are_for() {
    let modes: Vec<Option<TlsMode>> = WELL_KNOWN.iter().map(|p| known_mode(*p)).collect();
    assert_eq!(
        modes,
        vec![
            Some(TlsMode::Starttls),
            Some(TlsMode::Implicit),
            Some(TlsMode::StarttlsRequired),
            Some(TlsMode::StarttlsRequired)
        ]
    );
    assert_eq!(known_mode(10465), None, "another port is sniffed");
    let a = args(&["10465:implicit", "10025", "2525:STARTTLS"]);
    assert_eq!(
        a.ports,
        vec![
            PortArg { port: 10465, mode: Some(TlsMode::Implicit) },
            PortArg { port: 10025, mode: None },
            PortArg { port: 2525, mode: Some(TlsMode::Starttls) },
        ]
    );
}

/// Issue 10 item 8: errors speak the command line, not internal config paths.
#[test]
fn errors_name_the_flags() {
    let err = parse(&["mx", "--timeout", "3"]).unwrap_err();
    assert!(
        err.contains("invalid value '3' for '--timeout <TIMEOUT>'") && err.contains("invalid duration"),
        "{err}"
    );
    assert!(!err.contains("modules."), "{err}");
    let err = parse(&["mx", "--port", "25:sometimes"]).unwrap_err();
    assert!(
        err.contains("--port")
            && err.contains(
                "unknown TLS mode \"sometimes\" (one of none, starttls, starttls_required, implicit)"
            ),
        "{err}"
    );
    assert!(parse(&["mx", "--port", "0"]).unwrap_err().contains("not a port number"));
    let mut a = args(&[]);
    a.ca_file = Some("/nonexistent/ca.pem".into());
    let err = Plan::new(&a).err().unwrap().to_string();
    assert_eq!(err, "--ca-file /nonexistent/ca.pem: No such file or directory (os error 2)");
    let a = parse(&["mx", "--user", "u", "--password-file", "/nonexistent/pw"]).unwrap();
    let err = Plan::new(&a).err().unwrap().to_string();
    assert_eq!(err, "--password-file /nonexistent/pw: No such file or directory (os error 2)");
}

/// Issue 10 item 8: --user logs in on every port but 25, whatever its mode, instead of
/// skipping AUTH silently on a port with opportunistic STARTTLS.
#[test]
fn user_authenticates_on_every_port_but_25() {
    let pw = crate::test_support::temp_file("check-pw", "secret\n");
    let a = parse(&["mx.example.test", "--user", "u", "--password-file", pw.to_str().unwrap()]).unwrap();
    for (port, mode, wanted) in [
        (25, TlsMode::Starttls, false),
        (13587, TlsMode::Starttls, true),
        (587, TlsMode::StarttlsRequired, true),
        (465, TlsMode::Implicit, true),
        (2526, TlsMode::None, false),
    ] {
        let spec = spec_for(&a, port, mode);
        assert_eq!(spec.module.auth.is_some(), wanted, "port {port} {mode:?}");
    }
}

fn outcome(port: u16, failure: Option<(Phase, Reason)>) -> Checked {
    outcome_in(port, known_mode(port).unwrap_or(TlsMode::Starttls), failure)
}

fn outcome_in(port: u16, mode: TlsMode, failure: Option<(Phase, Reason)>) -> Checked {
    let spec = spec_for(&args(&[]), port, mode);
    let mut report = ProbeReport::new();
    report.failure = failure.map(|(phase, reason)| Failure { phase, reason, detail: "x".into() });
    if matches!(failure, None | Some((Phase::Auth, _))) {
        report.banner_code = Some(220);
    }
    Checked { spec, report, detected: None, speaks_tls: false }
}

#[test]
fn recommends_465_and_explains_a_filtered_25() {
    let results = vec![
        outcome(25, Some((Phase::Connect, Reason::Timeout))),
        outcome(465, None),
        outcome(587, None),
        outcome(2525, Some((Phase::Connect, Reason::Refused))),
    ];
    let advice = recommend("mx", &results, false);
    assert_eq!(advice[0], "Use 465 (implicit TLS, RFC 8314); 587 (STARTTLS) works too.");
    assert!(advice[1].starts_with("Port 25 is filtered on this network"), "{advice:?}");
    assert!(advice[1].contains("provider probably blocks outbound port 25"));
    assert!(advice[2].starts_with("Port 2525 refuses connections"));
    assert_eq!(advice.len(), 3);
}

#[test]
fn names_working_ports_without_tls() {
    let results = vec![outcome_in(2525, TlsMode::Starttls, None)];
    let advice = recommend("mx", &results, false);
    assert_eq!(advice, vec!["Port 2525 works, but without TLS: do not send passwords over it."]);
}

/// Issue 17: among STARTTLS ports, 587 (the registered submission port) comes first,
/// then any other, and 2525 (unofficial) only when nothing else works; a port that
/// failed is never called working without TLS.
#[test]
fn prefers_587_then_other_ports_then_2525() {
    let required = |port| outcome_in(port, TlsMode::StarttlsRequired, None);
    let first = |results: &[Checked]| recommend("mx", results, false)[0].clone();
    assert_eq!(
        first(&[required(2525), required(2526), outcome(587, None)]),
        "Use 587 (submission with STARTTLS)."
    );
    assert_eq!(first(&[required(2525), required(2526)]), "Use 2526 (submission with STARTTLS).");
    assert!(first(&[required(2525)]).starts_with("Use 2525 (STARTTLS): an unofficial alternative"));
    let failed = outcome_in(2526, TlsMode::Starttls, Some((Phase::Connect, Reason::Refused)));
    let advice = recommend("mx", &[failed], false);
    assert!(!advice.iter().any(|a| a.contains("without TLS")), "{advice:#?}");
    let filtered = outcome_in(2526, TlsMode::StarttlsRequired, Some((Phase::Connect, Reason::Timeout)));
    assert_eq!(
        recommend("mx", &[filtered], false)[0],
        "Port 2526 is filtered: the connection attempt got no answer (a firewall dropping it).",
        "only port 25's filter is blamed on the provider"
    );
}

#[test]
fn says_so_when_nothing_works() {
    let results = vec![outcome(587, Some((Phase::Auth, Reason::AuthFailed)))];
    let advice = recommend("mx", &results, false);
    assert!(advice[0].contains("failed in auth (auth_failed)"), "{advice:?}");
    assert_eq!(advice.last().unwrap(), "Nothing works on the ports checked.");
}

/// Issue 10 item 8: a silent port that answers TLS is named an implicit-TLS port; a
/// sniffed one says how it was probed; skipped AUTH is said, not silent.
#[test]
fn explains_tls_ports_and_skipped_auth() {
    let mut silent = outcome_in(13465, TlsMode::Starttls, Some((Phase::Banner, Reason::Timeout)));
    silent.speaks_tls = true;
    let mut sniffed = outcome_in(13466, TlsMode::Implicit, None);
    sniffed.detected = Some(Detected::Tls);
    let relay = outcome(25, None);
    let advice = recommend("mx", &[silent, sniffed, relay], true);
    assert!(advice.contains(&"Port 13465 sends no greeting but answers TLS: it is an implicit-TLS port; use --port 13465:implicit.".to_owned()), "{advice:#?}");
    assert!(advice.contains(&"Port 13466 sent no greeting but answered TLS: probed as implicit TLS (--port 13466:implicit says so up front).".to_owned()), "{advice:#?}");
    assert!(advice.contains(&"AUTH was not tried on 25: a relay port.".to_owned()), "{advice:#?}");
}

/// Issue 27: `check` builds its module with the configuration's constructors, so that
/// both agree on every default: the module `check --user u --password-file F --timeout
/// 5s` probes 587 with is the configuration's `{ tls: starttls_required, timeout: 5s,
/// auth: { username: u, password_file: F } }` but for what `check` sets on purpose (every
/// EHLO gauge, for a person to read).
#[test]
fn check_and_the_configuration_build_the_same_module() {
    let pw = crate::test_support::temp_file("check-same-module-pw", "secret\r\n");
    let pw = pw.display().to_string();
    let args = parse(&["mx.example.test", "--timeout", "5s", "--user", "u", "--password-file", &pw]).unwrap();
    let from_check = Plan::new(&args).unwrap().module(&args, 587, TlsMode::StarttlsRequired);
    let yaml = format!(
        "modules:\n  m:\n    tls: starttls_required\n    timeout: 5s\n    auth: {{ username: u, password_file: {pw} }}\ntargets:\n  - host: mx.example.test\n    ports: [{{ port: 587, module: m }}]\n"
    );
    let config = crate::config::parse(&yaml, "t.yml").unwrap();
    let from_config = &config.modules["m"];
    let shape = |m: &crate::config::Module| {
        let auth = m.auth.as_ref().map(|a| {
            let password = match &a.credentials.secret {
                crate::config::CredentialSource::Password(p) => p.expose().to_owned(),
                crate::config::CredentialSource::TokenFile(_) => String::new(),
            };
            (a.credentials.username.clone(), password, a.mechanism, a.allow_plaintext, a.allow_unverified_tls)
        });
        let delivery = m.delivery.is_some() || m.envelope.is_some();
        (m.tls_mode(), m.timeout, m.phase_timeout, m.ehlo_hostname.clone(), m.ip_protocol, auth, delivery)
    };
    assert_eq!(shape(&from_check), shape(from_config));
    assert_eq!(from_check.ehlo_metrics, crate::config::EhloMetrics::All);
}
