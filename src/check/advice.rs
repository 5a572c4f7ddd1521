//! The advice under `check`'s table: which port to use, and what to fix, in plain words
//! for a mail administrator.

use super::{Checked, Detected};
use crate::config::{self, TlsMode};
use crate::probe::{PortState, ProbeReport, Reason};
use crate::tls::CertError;

/// Plain-words advice from the reports: which port to use, and what is wrong with others.
pub(super) fn recommend(host: &str, results: &[Checked], with_user: bool) -> Vec<String> {
    let works = |port: u16| results.iter().any(|c| c.spec.port == port && c.report.success());
    let mut advice = Vec::new();
    if results.iter().any(|c| c.report.port_state() == PortState::Unresolved) {
        advice.push(format!("{host} does not resolve: check the name, or this machine's DNS."));
        return advice;
    }
    // A port other than 25 that negotiated STARTTLS counts as submission with STARTTLS,
    // whether the mode required it or the port was sniffed and offered it.
    let starttls_worked = |c: &Checked| match c.spec.module.tls_mode() {
        TlsMode::StarttlsRequired => true,
        TlsMode::Starttls => c.spec.port != 25 && c.report.tls.is_some(),
        _ => false,
    };
    let working = |implicit: bool| {
        let mut ports: Vec<u16> = results
            .iter()
            .filter(|c| c.report.success())
            .filter(
                |c| if implicit { c.spec.module.tls_mode() == TlsMode::Implicit } else { starttls_worked(c) },
            )
            .map(|c| c.spec.port)
            .collect();
        // 587 is the registered submission port; 2525 only an unofficial stand-in.
        ports.sort_by_key(|p| (*p != 587, *p == 2525, *p));
        ports
    };
    let (implicit, starttls) = (working(true), working(false));
    match (implicit.first(), starttls.first()) {
        (Some(i), Some(s)) => {
            advice.push(format!("Use {i} (implicit TLS, RFC 8314); {s} (STARTTLS) works too."))
        }
        (Some(i), None) => advice.push(format!("Use {i} (implicit TLS, RFC 8314).")),
        (None, Some(2525)) => advice.push(
            "Use 2525 (STARTTLS): an unofficial alternative, since no standard submission port works here."
                .into(),
        ),
        (None, Some(s)) => advice.push(format!("Use {s} (submission with STARTTLS).")),
        (None, None) => {}
    }
    if works(25) {
        advice.push(
            "Port 25 works: it is for server-to-server relay; mail clients should submit on 465 or 587."
                .into(),
        );
    }
    for c in results.iter().filter(|c| c.report.success() && c.spec.port != 25 && c.report.tls.is_none()) {
        if matches!(c.spec.module.tls_mode(), TlsMode::Starttls | TlsMode::None) {
            advice
                .push(format!("Port {} works, but without TLS: do not send passwords over it.", c.spec.port));
        }
    }
    for c in results {
        let p = c.spec.port;
        match c.detected {
            Some(Detected::Tls) => advice.push(format!(
                "Port {p} sent no greeting but answered TLS: probed as implicit TLS (--port {p}:implicit says so up front)."
            )),
            Some(Detected::Greeting) => advice.push(format!(
                "Port {p} greeted in plain text: probed with opportunistic STARTTLS (--port {p}:starttls_required insists on it)."
            )),
            _ => {}
        }
    }
    for c in results.iter().filter(|c| !c.report.success()) {
        let p = c.spec.port;
        if c.report.failure.as_ref().is_some_and(|f| f.reason == Reason::LocalResources) {
            advice
                .push(format!("Port {p} was not probed: this machine is out of file descriptors or memory."));
            continue;
        }
        let sentence = match c.report.port_state() {
            PortState::Filtered if p == 25 => "Port 25 is filtered on this network: the connection attempt got no answer. Your provider probably blocks outbound port 25.".to_owned(),
            PortState::Filtered => format!("Port {p} is filtered: the connection attempt got no answer (a firewall dropping it)."),
            PortState::Refused => format!("Port {p} refuses connections: nothing listens there, or a firewall rejects them with a reset."),
            PortState::Unreachable => format!("Port {p} is unreachable: an ICMP error came back (a firewall rejecting, or a routing problem)."),
            PortState::NoRoute => format!("Port {p}: this machine has no route to the server's address."),
            PortState::Silent if c.speaks_tls => format!("Port {p} sends no greeting but answers TLS: it is an implicit-TLS port; use --port {p}:implicit."),
            PortState::Silent => format!("Port {p} accepts connections but sends no greeting within {}: a tarpit, a slow postscreen (give it --timeout 30s), or a proxy.", config::format_duration(c.spec.module.timeout)),
            PortState::ClosedEarly => format!("Port {p} accepts connections, then closes them before its greeting."),
            PortState::Unresolved => continue,
            PortState::Open => match &c.report.failure {
                Some(f) if f.reason == Reason::TlsCertInvalid => cert_advice(p, &c.report),
                Some(f) => format!("Port {p} answers, but the probe failed in {} ({}): {}.", f.phase, f.reason, f.detail),
                None => continue,
            },
        };
        advice.push(sentence);
    }
    if with_user {
        for c in results.iter().filter(|c| c.spec.module.auth.is_none()) {
            let why = if c.spec.port == 25 { "a relay port" } else { "no TLS (mode none)" };
            advice.push(format!("AUTH was not tried on {}: {why}.", c.spec.port));
        }
    }
    if !results.iter().any(|c| c.report.success()) {
        advice.push("Nothing works on the ports checked.".into());
    }
    advice
}

/// A certificate failure in words, with the command line's remedy.
pub(super) fn cert_advice(port: u16, report: &ProbeReport) -> String {
    let tls = report.tls.as_ref();
    let what = tls
        .and_then(|t| t.cert_error_detail.clone())
        .unwrap_or_else(|| "the certificate did not verify".into());
    let remedy = match tls.and_then(|t| t.cert_error) {
        Some(CertError::SelfSigned | CertError::UnknownIssuer) => {
            "if you trust it, pass its (CA) certificate with --ca-file, or skip verification with --insecure"
        }
        Some(CertError::NameMismatch) => "check the name you gave, or skip verification with --insecure",
        _ => "--insecure probes past it",
    };
    format!("Port {port}: {what}; {remedy}.")
}
