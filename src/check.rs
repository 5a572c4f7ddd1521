//! `smtp_exporter check HOST`: probe a mail server once on each port and explain the result
//! to a person.
//!
//! Beside the scheduled flow, reusing its parts: the command line becomes a small YAML
//! config (validated by `config`, like any other), each port is probed once by
//! `probe::run`, and the reports are rendered as a table or JSON with a recommendation in
//! plain words. Nothing here touches the metrics registry.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{self, ProbeSpec, TlsMode};
use crate::logging::format_date;
use crate::probe::{self, Phase, PortState, ProbeReport};

/// Arguments of the `check` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Host name or IP address of the mail server.
    pub host: String,

    /// A port to probe, optionally with its TLS mode (none, starttls, starttls_required,
    /// implicit). Repeatable. Default: 25, 465, 587 and 2525, with the mode each is for.
    #[arg(long = "port", value_name = "PORT[:MODE]")]
    pub ports: Vec<String>,

    /// Authenticate as this user on the submission ports (modes implicit and
    /// starttls_required: 465, 587, 2525), not on relay ports like 25.
    #[arg(long, requires = "password_file")]
    pub user: Option<String>,

    /// File holding the password for --user.
    #[arg(long = "password-file", value_name = "PATH", requires = "user")]
    pub password_file: Option<PathBuf>,

    /// Deadline for each port's whole probe.
    #[arg(long, default_value = "10s")]
    pub timeout: String,

    /// Trust only the CA certificates in this PEM file.
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify certificates.
    #[arg(long)]
    pub insecure: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The result of a check: what to print, and whether any port worked.
pub struct CheckOutput {
    pub text: String,
    pub any_success: bool,
}

/// The TLS mode a well-known port is for; other ports get opportunistic STARTTLS.
fn default_mode(port: u16) -> TlsMode {
    match port {
        465 => TlsMode::Implicit,
        587 | 2525 => TlsMode::StarttlsRequired,
        _ => TlsMode::Starttls,
    }
}

fn parse_port(text: &str) -> Result<(u16, TlsMode), String> {
    let (port, mode) = match text.split_once(':') {
        Some((p, m)) => (p, Some(m)),
        None => (text, None),
    };
    let port: u16 =
        port.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("--port {text}: not a port number"))?;
    let mode = match mode {
        None => default_mode(port),
        Some("none") => TlsMode::None,
        Some("starttls") => TlsMode::Starttls,
        Some("starttls_required") => TlsMode::StarttlsRequired,
        Some("implicit") => TlsMode::Implicit,
        Some(other) => {
            return Err(format!(
                "--port {text}: unknown TLS mode {other:?} (none, starttls, starttls_required, implicit)"
            ))
        }
    };
    Ok((port, mode))
}

/// Builds one probe spec per port, through the same validation as a config file.
fn specs(args: &CheckArgs) -> Result<Vec<ProbeSpec>, String> {
    let ports: Vec<(u16, TlsMode)> = if args.ports.is_empty() {
        [25, 465, 587, 2525].into_iter().map(|p| (p, default_mode(p))).collect()
    } else {
        args.ports.iter().map(|p| parse_port(p)).collect::<Result<_, _>>()?
    };
    // JSON strings are valid YAML scalars: user input cannot change the structure.
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut yaml = String::from("interval: 1h\nmodules:\n");
    for (port, mode) in &ports {
        let _ = writeln!(
            yaml,
            "  port_{port}:\n    tls: {}\n    timeout: {}",
            mode.as_str(),
            quote(&args.timeout)
        );
        if *mode != TlsMode::None {
            let ca = args.ca_file.as_ref().map(|p| format!("ca_file: {}, ", quote(&p.display().to_string())));
            let _ = writeln!(
                yaml,
                "    tls_config: {{ {}insecure_skip_verify: {} }}",
                ca.unwrap_or_default(),
                args.insecure
            );
        }
        if let (Some(user), Some(file)) = (&args.user, &args.password_file) {
            // Submission ports only: relay-style (opportunistic) ports are not for AUTH.
            if matches!(mode, TlsMode::Implicit | TlsMode::StarttlsRequired) {
                let _ = writeln!(
                    yaml,
                    "    auth: {{ username: {}, password_file: {} }}",
                    quote(user),
                    quote(&file.display().to_string())
                );
            }
        }
    }
    let _ = writeln!(yaml, "targets:\n  - name: {h}\n    host: {h}\n    ports:", h = quote(&args.host));
    for (port, _) in &ports {
        let _ = writeln!(yaml, "      - {{ port: {port}, module: port_{port} }}");
    }
    let config = config::parse(&yaml, "command line").map_err(|e| e.message)?;
    Ok(config.specs)
}

/// Probes every port at once and renders the result.
pub async fn run(args: &CheckArgs) -> Result<CheckOutput, String> {
    let specs = specs(args)?;
    let handles: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            tokio::spawn(async move {
                let report = probe::run(&spec).await;
                (spec, report)
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.map_err(|e| format!("probe task failed: {e}"))?);
    }
    let any_success = results.iter().any(|(_, r)| r.success());
    let advice = recommend(&args.host, &results);
    let text = if args.json {
        render_json(&args.host, &results, &advice)
    } else {
        render_table(&args.host, &results, &advice)
    };
    Ok(CheckOutput { text, any_success })
}

/// Plain-words advice from the reports: which port to use, and what is wrong with others.
pub fn recommend(host: &str, results: &[(ProbeSpec, ProbeReport)]) -> Vec<String> {
    let works = |port: u16| results.iter().any(|(s, r)| s.port == port && r.success());
    let mut advice = Vec::new();
    if results.iter().any(|(_, r)| r.port_state() == PortState::Unresolved) {
        advice.push(format!("{host} does not resolve: check the name, or this machine's DNS."));
        return advice;
    }
    let working = |mode: TlsMode| {
        let mut ports: Vec<u16> = results
            .iter()
            .filter(|(s, r)| r.success() && s.module.tls_mode == mode)
            .map(|(s, _)| s.port)
            .collect();
        // 587 is the registered submission port; 2525 only an unofficial stand-in.
        ports.sort_by_key(|p| (*p != 587, *p == 2525, *p));
        ports
    };
    let (implicit, starttls) = (working(TlsMode::Implicit), working(TlsMode::StarttlsRequired));
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
    for (spec, report) in results.iter().filter(|(s, r)| r.success() && s.port != 25) {
        match (spec.module.tls_mode, &report.tls) {
            (TlsMode::Starttls | TlsMode::None, Some(_)) => {
                advice.push(format!("Port {} works (STARTTLS).", spec.port))
            }
            (TlsMode::Starttls | TlsMode::None, None) => advice
                .push(format!("Port {} works, but without TLS: do not send passwords over it.", spec.port)),
            _ => {}
        }
    }
    for (spec, report) in results.iter().filter(|(_, r)| !r.success()) {
        let p = spec.port;
        let sentence = match report.port_state() {
            PortState::Filtered if p == 25 => "Port 25 is filtered on this network: the connection attempt got no answer. Your provider probably blocks outbound port 25.".to_owned(),
            PortState::Filtered => format!("Port {p} is filtered: the connection attempt got no answer (a firewall dropping it)."),
            PortState::Refused => format!("Port {p} refuses connections: nothing listens there, or a firewall rejects them with a reset."),
            PortState::Unreachable => format!("Port {p} is unreachable: an ICMP error came back (a firewall rejecting, or a routing problem)."),
            PortState::NoRoute => format!("Port {p}: this machine has no route to the server's address."),
            PortState::Silent => format!("Port {p} accepts connections but sends no greeting: a tarpit, a slow postscreen, or a proxy."),
            PortState::ClosedEarly => format!("Port {p} accepts connections, then closes them before its greeting."),
            PortState::Unresolved => continue,
            PortState::Open => match &report.failure {
                Some(f) => format!("Port {p} answers, but the probe failed in {} ({}): {}.", f.phase, f.reason, f.detail),
                None => continue,
            },
        };
        advice.push(sentence);
    }
    if !results.iter().any(|(_, r)| r.success()) {
        advice.push("Nothing works on the ports checked.".into());
    }
    advice
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn auth_mechanisms(report: &ProbeReport) -> Vec<String> {
    report.ehlo_tls.as_ref().or(report.ehlo.as_ref()).map(|c| c.auth_mechanisms.clone()).unwrap_or_default()
}

fn cert_expiry(report: &ProbeReport) -> Option<(String, i64)> {
    let not_after = report.tls.as_ref()?.leaf_not_after?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Some((format_date(not_after), (not_after - now).div_euclid(86_400)))
}

fn render_table(host: &str, results: &[(ProbeSpec, ProbeReport)], advice: &[String]) -> String {
    let mut rows =
        vec![["PORT", "MODE", "STATE", "RESULT", "TLS", "CERT EXPIRES", "AUTH"].map(String::from).to_vec()];
    for (spec, r) in results {
        let result = match &r.failure {
            None => "ok".to_owned(),
            Some(f) => format!("{}: {}", f.phase, f.reason),
        };
        let tls = r.tls.as_ref().map(|t| t.version.clone()).unwrap_or_else(|| "-".into());
        let cert = cert_expiry(r).map(|(d, days)| format!("{d} ({days} d)")).unwrap_or_else(|| "-".into());
        let auth = auth_mechanisms(r);
        let auth = if auth.is_empty() { "-".to_owned() } else { auth.join(" ") };
        rows.push(vec![
            spec.port.to_string(),
            spec.module.tls_mode.as_str().to_owned(),
            r.port_state().as_str().to_owned(),
            result,
            tls,
            cert,
            auth,
        ]);
    }
    let mut out = format!("smtp_exporter check {host}\n\n");
    push_table(&mut out, &rows);

    out.push_str("\nPhase times (ms):\n");
    let mut phase_rows = vec![std::iter::once("PORT".to_owned())
        .chain(Phase::ALL.iter().map(|p| p.as_str().to_owned()))
        .collect::<Vec<_>>()];
    for (spec, r) in results {
        let mut row = vec![spec.port.to_string()];
        row.extend(Phase::ALL.iter().map(|p| r.phase(*p).map(ms).unwrap_or_else(|| "-".into())));
        phase_rows.push(row);
    }
    push_table(&mut out, &phase_rows);

    out.push_str("\nRecommendation:\n");
    for line in advice {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn push_table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[derive(Serialize)]
struct JsonCheck<'a> {
    host: &'a str,
    ports: Vec<JsonPort>,
    working_ports: Vec<u16>,
    recommendation: &'a [String],
}

#[derive(Serialize)]
struct JsonPort {
    port: u16,
    mode: &'static str,
    state: &'static str,
    success: bool,
    failure: Option<JsonFailure>,
    /// The phases that ran, in order.
    phases: Vec<JsonPhase>,
    banner_code: Option<u16>,
    banner_hostname: Option<String>,
    starttls_advertised: Option<bool>,
    tls_version: Option<String>,
    tls_cipher: Option<String>,
    cert_expiry: Option<String>,
    cert_expiry_timestamp_seconds: Option<i64>,
    auth_mechanisms: Vec<String>,
    auth_success: Option<bool>,
}

#[derive(Serialize)]
struct JsonPhase {
    phase: &'static str,
    seconds: f64,
}

#[derive(Serialize)]
struct JsonFailure {
    phase: &'static str,
    reason: &'static str,
    detail: String,
}

fn render_json(host: &str, results: &[(ProbeSpec, ProbeReport)], advice: &[String]) -> String {
    let ports = results
        .iter()
        .map(|(spec, r)| JsonPort {
            port: spec.port,
            mode: spec.module.tls_mode.as_str(),
            state: r.port_state().as_str(),
            success: r.success(),
            failure: r.failure.as_ref().map(|f| JsonFailure {
                phase: f.phase.as_str(),
                reason: f.reason.as_str(),
                detail: f.detail.clone(),
            }),
            phases: r
                .phases
                .iter()
                .map(|(p, d)| JsonPhase { phase: p.as_str(), seconds: d.as_secs_f64() })
                .collect(),
            banner_code: r.banner_code,
            banner_hostname: r.banner_hostname.clone(),
            starttls_advertised: r.starttls_advertised(),
            tls_version: r.tls.as_ref().map(|t| t.version.clone()),
            tls_cipher: r.tls.as_ref().map(|t| t.cipher.clone()),
            cert_expiry: cert_expiry(r).map(|(d, _)| d),
            cert_expiry_timestamp_seconds: r.tls.as_ref().and_then(|t| t.leaf_not_after),
            auth_mechanisms: auth_mechanisms(r),
            auth_success: r.auth_success,
        })
        .collect();
    let working_ports = results.iter().filter(|(_, r)| r.success()).map(|(s, _)| s.port).collect();
    let out = JsonCheck { host, ports, working_ports, recommendation: advice };
    serde_json::to_string_pretty(&out).expect("check output serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Failure, Reason};

    fn args(ports: &[&str]) -> CheckArgs {
        CheckArgs {
            host: "mx.example.test".into(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            user: None,
            password_file: None,
            timeout: "5s".into(),
            ca_file: None,
            insecure: false,
            json: false,
        }
    }

    #[test]
    fn ports_get_the_mode_they_are_for() {
        let specs = specs(&args(&[])).unwrap();
        let modes: Vec<(u16, TlsMode)> = specs.iter().map(|s| (s.port, s.module.tls_mode)).collect();
        assert_eq!(
            modes,
            vec![
                (25, TlsMode::Starttls),
                (465, TlsMode::Implicit),
                (587, TlsMode::StarttlsRequired),
                (2525, TlsMode::StarttlsRequired)
            ]
        );
        let custom = super::specs(&args(&["10465:implicit", "10025"])).unwrap();
        assert_eq!(custom[0].module.tls_mode, TlsMode::Implicit);
        assert_eq!(custom[1].module.tls_mode, TlsMode::Starttls);
        assert!(super::specs(&args(&["25:sometimes"])).unwrap_err().contains("unknown TLS mode"));
        assert!(super::specs(&args(&["0"])).unwrap_err().contains("not a port number"));
    }

    #[test]
    fn hostile_host_text_cannot_change_the_config() {
        let mut a = args(&["25"]);
        a.host = "x\n    ports: []\nmodules: {}".into();
        // Parsed as one (odd) host name, not as YAML structure.
        assert!(specs(&a).unwrap_err().contains("not a valid TLS server name"));
    }

    fn outcome(port: u16, failure: Option<(Phase, Reason)>) -> (ProbeSpec, ProbeReport) {
        let spec = specs(&args(&[&port.to_string()])).unwrap().remove(0);
        let mut report = ProbeReport::new();
        report.failure = failure.map(|(phase, reason)| Failure { phase, reason, detail: "x".into() });
        if matches!(failure, None | Some((Phase::Auth, _))) {
            report.banner_code = Some(220);
        }
        (spec, report)
    }

    #[test]
    fn recommends_465_and_explains_a_filtered_25() {
        let results = vec![
            outcome(25, Some((Phase::Connect, Reason::Timeout))),
            outcome(465, None),
            outcome(587, None),
            outcome(2525, Some((Phase::Connect, Reason::Refused))),
        ];
        let advice = recommend("mx", &results);
        assert_eq!(advice[0], "Use 465 (implicit TLS, RFC 8314); 587 (STARTTLS) works too.");
        assert!(advice[1].starts_with("Port 25 is filtered on this network"), "{advice:?}");
        assert!(advice[1].contains("provider probably blocks outbound port 25"));
        assert!(advice[2].starts_with("Port 2525 refuses connections"));
        assert_eq!(advice.len(), 3);
    }

    #[test]
    fn names_working_ports_without_tls() {
        let results = vec![outcome(2525, None)];
        let mut results = results;
        results[0].0 = specs(&args(&["2525:starttls"])).unwrap().remove(0);
        let advice = recommend("mx", &results);
        assert_eq!(advice, vec!["Port 2525 works, but without TLS: do not send passwords over it."]);
    }

    #[test]
    fn says_so_when_nothing_works() {
        let results = vec![outcome(587, Some((Phase::Auth, Reason::AuthFailed)))];
        let advice = recommend("mx", &results);
        assert!(advice[0].contains("failed in auth (auth_failed)"), "{advice:?}");
        assert_eq!(advice.last().unwrap(), "Nothing works on the ports checked.");
    }
}
