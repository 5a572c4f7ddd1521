//! `smtp_exporter check HOST`: probe a mail server once on each port and explain the result
//! to a person.
//!
//! Beside the scheduled flow, reusing its parts: the command line becomes one `Module` and
//! `ProbeSpec` per port, built directly (errors speak of the command line's flags), each
//! port is probed once by `probe::run`, and the reports are rendered as a table or JSON
//! with a recommendation in plain words. A port outside 25, 465, 587 and 2525 given without
//! a mode is first sniffed: a greeting means SMTP, silence and a TLS answer mean implicit
//! TLS. Nothing here touches the metrics registry.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use strum::{VariantArray, VariantNames};

use crate::config::{
    self, Auth, CredentialSource, Credentials, Expectations, IpProtocol, Module, ProbeSpec, Secret, Tls,
    TlsMode, Transport,
};
mod deliver;
mod domain;

use crate::dns::{DnsSettings, Resolver};
use crate::logging::format_date;
use crate::probe::{self, Phase, PortState, ProbeReport, Reason};
use crate::tls::{self, CertError, Roots, TlsSettings};

/// Arguments of the `check` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Host name or IP address of the mail server.
    pub host: String,

    /// A port to probe, optionally with its TLS mode (none, starttls, starttls_required,
    /// implicit). Repeatable. Default: 25, 465, 587 and 2525, with the mode each is for;
    /// another port without a mode is sniffed (a greeting: STARTTLS; silence and a TLS
    /// answer: implicit).
    #[arg(long = "port", value_name = "PORT[:MODE]", value_parser = PortArg::parse)]
    pub ports: Vec<PortArg>,

    /// Authenticate as this user on every port but 25 (the relay port); never without TLS.
    #[arg(long, requires = "password_file")]
    pub user: Option<String>,

    /// File holding the password for --user.
    #[arg(long = "password-file", value_name = "PATH", requires = "user")]
    pub password_file: Option<PathBuf>,

    /// Deadline for each port's whole probe, e.g. 10s or 1m30s.
    #[arg(long, default_value = "10s", value_parser = config::parse_timeout)]
    pub timeout: Duration,

    /// Trust only the CA certificates (or the self-signed certificate) in this PEM file.
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify certificates.
    #[arg(long)]
    pub insecure: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Treat the argument as a mail domain and walk its MX set like a sender, even when it
    /// has no MX record (its own addresses are then the implicit MX). Without the flag, an
    /// argument with MX records is walked that way too.
    #[arg(long)]
    pub mx: bool,

    /// Ask this name server (ADDRESS or ADDRESS:PORT) instead of the system's.
    #[arg(long = "dns-server", value_name = "ADDRESS[:PORT]", value_parser = parse_dns_server)]
    pub dns_server: Option<std::net::SocketAddr>,

    /// Validate DNSSEC (for DANE's TLSA records) from the DNSKEY records in FILE instead
    /// of IANA's root keys.
    #[arg(long = "dns-trust-anchors", value_name = "FILE")]
    pub dns_trust_anchors: Option<std::path::PathBuf>,

    /// How DNSSEC verdicts are reached: validate (from the trust anchors, through any name
    /// server that passes DNSSEC records), trust_ad (the AD bit of a validating name server
    /// on a trusted link), off (no DANE, no DNSSEC verdict).
    #[arg(long = "dnssec", value_name = "MODE", value_parser = crate::dnssec::DnssecMode::parse, default_value = "validate")]
    pub dnssec: crate::dnssec::DnssecMode,

    /// Send a message to ADDRESS through one port (the first --port, else 587) and read it
    /// back over IMAP (--imap-user, --imap-password-file); it is deleted once seen.
    #[arg(long, value_name = "ADDRESS", requires_all = ["imap_user", "imap_password_file"])]
    pub deliver: Option<String>,

    /// The delivery's sender. Default: --user, when it is an address.
    #[arg(long = "mail-from", value_name = "ADDRESS", requires = "deliver")]
    pub mail_from: Option<String>,

    /// The mailbox's IMAP server. Default: HOST.
    #[arg(long = "imap-host", value_name = "HOST", requires = "deliver")]
    pub imap_host: Option<String>,

    /// The IMAP port. Default: 993, or 143 with --imap-starttls.
    #[arg(long = "imap-port", value_name = "PORT", requires = "deliver")]
    pub imap_port: Option<u16>,

    /// IMAP with STARTTLS instead of implicit TLS.
    #[arg(long = "imap-starttls", requires = "deliver")]
    pub imap_starttls: bool,

    /// The mailbox's IMAP login.
    #[arg(long = "imap-user", value_name = "USER", requires = "deliver")]
    pub imap_user: Option<String>,

    /// File holding the password for --imap-user.
    #[arg(long = "imap-password-file", value_name = "PATH", requires = "deliver")]
    pub imap_password_file: Option<PathBuf>,
}

/// `--dns-server`: an address, with port 53 unless one is given.
fn parse_dns_server(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{text:?} is not an IP address or ADDRESS:PORT ([v6]:PORT for IPv6)"))
}

/// One `--port PORT[:MODE]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortArg {
    pub port: u16,
    /// `None`: the mode the port is for (or, for another port, what sniffing finds).
    pub mode: Option<TlsMode>,
}

impl PortArg {
    fn parse(text: &str) -> Result<PortArg, String> {
        let (port, mode) = match text.split_once(':') {
            Some((p, m)) => (p, Some(m)),
            None => (text, None),
        };
        let port =
            port.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("{port:?} is not a port number"))?;
        let mode =
            match mode {
                None => None,
                Some(m) => Some(m.parse().map_err(|_| {
                    format!("unknown TLS mode {m:?} (one of {})", TlsMode::VARIANTS.join(", "))
                })?),
            };
        Ok(PortArg { port, mode })
    }
}

/// Why a check could not run: a flag's file, the host, or a probe task that ended badly.
#[derive(Debug)]
pub enum CheckError {
    /// A file a flag names could not be used: `--ca-file`, `--password-file`.
    Flag { flag: &'static str, message: String },
    /// The bundled roots could not be set up (never expected).
    Tls(crate::tls::SetupError),
    /// The host is not a name a certificate can be checked against.
    Host(config::NameError),
    /// A probe task panicked or was cancelled.
    Task(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Flag { flag, message } => write!(f, "{flag} {message}"),
            CheckError::Tls(e) => write!(f, "TLS set-up: {e}"),
            CheckError::Host(e) => e.fmt(f),
            CheckError::Task(e) => write!(f, "probe task failed: {e}"),
        }
    }
}

impl std::error::Error for CheckError {}

/// The result of a check: what to print, and whether any port worked.
pub struct CheckOutput {
    pub text: String,
    pub any_success: bool,
}

/// The ports checked when none is given.
const WELL_KNOWN: [u16; 4] = [25, 465, 587, 2525];

/// The TLS mode a well-known port is for; `None` for other ports.
fn known_mode(port: u16) -> Option<TlsMode> {
    match port {
        25 => Some(TlsMode::Starttls),
        465 => Some(TlsMode::Implicit),
        587 | 2525 => Some(TlsMode::StarttlsRequired),
        _ => None,
    }
}

/// How long a port of unknown role gets to greet before TLS is tried on it.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(2);

/// What the command line says, read and checked before any probe: its errors name flags.
struct Plan {
    /// TLS settings that fail on an invalid certificate (for implicit and
    /// starttls_required), and that only report it (opportunistic STARTTLS).
    strict: Arc<TlsSettings>,
    lenient: Arc<TlsSettings>,
    auth: Option<Auth>,
    resolver: Arc<Resolver>,
}

impl Plan {
    fn new(args: &CheckArgs) -> Result<Plan, CheckError> {
        let roots = match &args.ca_file {
            Some(path) => Roots::CaFile(path.clone()),
            None => Roots::Bundled,
        };
        let settings = |fail: bool| {
            TlsSettings::new(&roots, fail).map(Arc::new).map_err(|e| match &args.ca_file {
                Some(_) => CheckError::Flag { flag: "--ca-file", message: e.to_string() },
                None => CheckError::Tls(e),
            })
        };
        let auth = match (&args.user, &args.password_file) {
            (Some(user), Some(path)) => {
                let flag = |message: String| CheckError::Flag { flag: "--password-file", message };
                let password =
                    crate::files::read_secret(path).map_err(|e| flag(format!("{}: {e}", path.display())))?;
                if password.is_empty() {
                    return Err(flag(format!("{}: the file is empty", path.display())));
                }
                Some(Auth {
                    credentials: Credentials {
                        username: user.clone(),
                        secret: CredentialSource::Password(Secret::new(password)),
                    },
                    mechanism: None,
                    allow_plaintext: false,
                    // --insecure says to go on past a certificate that does not verify.
                    allow_unverified_tls: args.insecure,
                })
            }
            _ => None,
        };
        let dns = DnsSettings {
            nameservers: args.dns_server.into_iter().collect(),
            trust_anchors: args.dns_trust_anchors.clone(),
            dnssec: args.dnssec,
            ..DnsSettings::default()
        };
        Ok(Plan {
            strict: settings(!args.insecure)?,
            lenient: settings(false)?,
            auth,
            resolver: Resolver::new(&dns)
                .map_err(|message| CheckError::Flag { flag: "--dns-trust-anchors", message })?,
        })
    }

    /// The spec that probes `host:port` in `mode`.
    fn spec(&self, args: &CheckArgs, port: u16, mode: TlsMode) -> Result<ProbeSpec, CheckError> {
        self.spec_with(args, port, self.module(args, port, mode))
    }

    /// The spec that probes `host:port` with `module`.
    fn spec_with(&self, args: &CheckArgs, port: u16, module: Arc<Module>) -> Result<ProbeSpec, CheckError> {
        module
            .spec(
                &args.host,
                &args.host,
                port,
                &format!("port_{port}"),
                Arc::new(Expectations::default()),
                &self.resolver,
            )
            .map_err(CheckError::Host)
    }

    /// The module that probes `port` in `mode`.
    fn module(&self, args: &CheckArgs, port: u16, mode: TlsMode) -> Arc<Module> {
        let settings = if mode == TlsMode::Starttls { &self.lenient } else { &self.strict };
        Arc::new(Module {
            transport: Transport::of_mode(mode, || Tls { settings: settings.clone(), name: None }),
            timeout: args.timeout,
            phase_timeout: args.timeout,
            ehlo_hostname: config::DEFAULT_EHLO_HOSTNAME.to_owned(),
            ehlo_metrics: crate::config::EhloMetrics::All,
            ip_protocol: IpProtocol::Auto,
            auth: self.auth.clone().filter(|_| authenticates(port, mode)),
            envelope: None,
            delivery: None,
        })
    }
}

/// Whether `--user` logs in on this port: every port but 25 (server-to-server relay),
/// and never on a session that has no TLS.
fn authenticates(port: u16, mode: TlsMode) -> bool {
    port != 25 && mode != TlsMode::None
}

/// One port's outcome, and what the check found out about the port on the way.
struct Checked {
    spec: ProbeSpec,
    report: ProbeReport,
    /// Set when the mode was found by sniffing a port of unknown role.
    detected: Option<Detected>,
    /// The port sent no greeting in a plain-text mode but answered a TLS ClientHello.
    speaks_tls: bool,
}

/// How a port of unknown role was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detected {
    /// It greeted at once: SMTP in plain text, STARTTLS when offered.
    Greeting,
    /// No greeting, but TLS answered: implicit TLS.
    Tls,
    /// Neither: probed as opportunistic STARTTLS, which reports what went wrong.
    Nothing,
}

/// Probes every port at once and renders the result; a mail domain (`--mx`, or an
/// argument with MX records) is walked like a sender instead (`domain`).
pub async fn run(args: &CheckArgs) -> Result<CheckOutput, CheckError> {
    let plan = Plan::new(args)?;
    if args.deliver.is_some() {
        return deliver::run(args, &plan).await;
    }
    if domain::mx_walk_wanted(args, &plan.resolver).await {
        return domain::run(args, &plan).await;
    }
    let ports: Vec<PortArg> = if args.ports.is_empty() {
        WELL_KNOWN.iter().map(|&port| PortArg { port, mode: None }).collect()
    } else {
        args.ports.clone()
    };
    // Sniffing connects on its own; it uses the address the probes will use.
    let address = plan.resolver.first_address(&args.host, None).await.ok();
    let mut tasks = Vec::new();
    for port in ports {
        let (host, lenient, args) = (args.host.clone(), plan.lenient.clone(), args.clone());
        let target = address.map(|ip| std::net::SocketAddr::new(ip, port.port));
        let given = port.mode.or(known_mode(port.port));
        let plan_spec = |mode| plan.spec(&args, port.port, mode);
        // Specs are built before the tasks start, so that a bad host fails the whole command.
        let fixed = given.map(plan_spec).transpose()?;
        let (sniffed_plain, sniffed_tls) = match fixed {
            Some(_) => (None, None),
            None => (Some(plan_spec(TlsMode::Starttls)?), Some(plan_spec(TlsMode::Implicit)?)),
        };
        tasks.push(tokio::spawn(async move {
            let (spec, detected) = match fixed {
                Some(spec) => (spec, None),
                None => {
                    let found = sniff(&host, target, &lenient).await;
                    let spec = if found == Detected::Tls { sniffed_tls } else { sniffed_plain };
                    (spec.expect("both sniffed specs are built"), Some(found))
                }
            };
            let report = probe::run(&spec).await;
            let speaks_tls = report.port_state() == PortState::Silent
                && spec.module.tls_mode() != TlsMode::Implicit
                && answers_tls(&host, target, &lenient).await;
            Checked { spec, report, detected, speaks_tls }
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.map_err(|e| CheckError::Task(e.to_string()))?);
    }
    let any_success = results.iter().any(|c| c.report.success());
    let advice = recommend(&args.host, &results, plan.auth.is_some());
    let text = if args.json {
        render_json(&args.host, &results, &advice)
    } else {
        render_table(&args.host, &results, &advice)
    };
    Ok(CheckOutput { text, any_success })
}

/// Classifies a port of unknown role: a greeting within `SNIFF_TIMEOUT` is SMTP; silence,
/// then a TLS answer to a ClientHello on a second connection, is implicit TLS.
async fn sniff(host: &str, target: Option<std::net::SocketAddr>, tls: &TlsSettings) -> Detected {
    use tokio::io::AsyncReadExt;
    let Some(target) = target else { return Detected::Nothing };
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(SNIFF_TIMEOUT, tokio::net::TcpStream::connect(target)).await
    else {
        // Refused, filtered or unresolved: the probe itself will say which.
        return Detected::Nothing;
    };
    let mut first = [0u8; 1];
    if let Ok(Ok(1)) = tokio::time::timeout(SNIFF_TIMEOUT, stream.read(&mut first)).await {
        return Detected::Greeting;
    }
    drop(stream);
    if answers_tls(host, Some(target), tls).await {
        Detected::Tls
    } else {
        Detected::Nothing
    }
}

/// Whether `host:port` answers a TLS ClientHello with TLS (a handshake, or a TLS alert).
async fn answers_tls(host: &str, target: Option<std::net::SocketAddr>, tls: &TlsSettings) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(target?).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("invalid").expect("a valid name"));
        Some(match tls::handshake(tls, name, None, stream).await {
            Ok(_) => true,
            Err(e) => e.reason == Reason::TlsUnsupported,
        })
    };
    matches!(tokio::time::timeout(SNIFF_TIMEOUT, attempt).await, Ok(Some(true)))
}

/// Plain-words advice from the reports: which port to use, and what is wrong with others.
fn recommend(host: &str, results: &[Checked], with_user: bool) -> Vec<String> {
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
fn cert_advice(port: u16, report: &ProbeReport) -> String {
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

fn render_table(host: &str, results: &[Checked], advice: &[String]) -> String {
    let mut rows =
        vec![["PORT", "MODE", "STATE", "RESULT", "TLS", "CERT EXPIRES", "AUTH"].map(String::from).to_vec()];
    for Checked { spec, report: r, .. } in results {
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
            spec.module.tls_mode().as_str().to_owned(),
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
        .chain(Phase::VARIANTS.iter().map(|p| p.as_str().to_owned()))
        .collect::<Vec<_>>()];
    for Checked { spec, report: r, .. } in results {
        let mut row = vec![spec.port.to_string()];
        row.extend(Phase::VARIANTS.iter().map(|p| r.phase(*p).map(ms).unwrap_or_else(|| "-".into())));
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
    /// For a port of unknown role given without a mode: what sniffing found.
    mode_detected_by: Option<&'static str>,
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

fn render_json(host: &str, results: &[Checked], advice: &[String]) -> String {
    let ports = results
        .iter()
        .map(|Checked { spec, report: r, detected, .. }| JsonPort {
            port: spec.port,
            mode: spec.module.tls_mode().as_str(),
            mode_detected_by: detected.map(|d| match d {
                Detected::Greeting => "greeting",
                Detected::Tls => "tls",
                Detected::Nothing => "nothing",
            }),
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
    let working_ports = results.iter().filter(|c| c.report.success()).map(|c| c.spec.port).collect();
    let out = JsonCheck { host, ports, working_ports, recommendation: advice };
    serde_json::to_string_pretty(&out).expect("check output serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Failure;
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
}
