//! What `check` will do, made from its arguments: the modules and specs of each port
//! ([`Plan`]), built with the configuration's own types, and the sniffing that finds the
//! role of a port outside 25, 465, 587 and 2525.

use std::sync::Arc;
use std::time::Duration;

use super::{CheckArgs, CheckError};
use crate::config::{Auth, Expectations, Module, ProbeSpec, Secret, Tls, TlsMode, Transport};
use crate::dns::{DnsSettings, Resolver};
use crate::probe::{ProbeReport, Reason};
use crate::tls::{self, Roots, TlsSettings};

/// The ports checked when none is given.
pub(super) const WELL_KNOWN: [u16; 4] = [25, 465, 587, 2525];

/// The TLS mode a well-known port is for; `None` for other ports.
pub(super) fn known_mode(port: u16) -> Option<TlsMode> {
    match port {
        25 => Some(TlsMode::Starttls),
        465 => Some(TlsMode::Implicit),
        587 | 2525 => Some(TlsMode::StarttlsRequired),
        _ => None,
    }
}

/// How long a port of unknown role gets to greet before TLS is tried on it.
pub(super) const SNIFF_TIMEOUT: Duration = Duration::from_secs(2);

/// What the command line says, read and checked before any probe: its errors name flags.
pub(super) struct Plan {
    /// TLS settings that fail on an invalid certificate (for implicit and
    /// starttls_required), and that only report it (opportunistic STARTTLS).
    pub(super) strict: Arc<TlsSettings>,
    pub(super) lenient: Arc<TlsSettings>,
    pub(super) auth: Option<Auth>,
    pub(super) resolver: Arc<Resolver>,
}

impl Plan {
    pub(super) fn new(args: &CheckArgs) -> Result<Plan, CheckError> {
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
                    // --insecure says to go on past a certificate that does not verify.
                    allow_unverified_tls: args.insecure,
                    ..Auth::with_password(user.clone(), Secret::new(password))
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
                .map_err(|e| CheckError::Flag { flag: "--dns-trust-anchors", message: e.to_string() })?,
        })
    }

    /// The spec that probes `host:port` in `mode`.
    pub(super) fn spec(&self, args: &CheckArgs, port: u16, mode: TlsMode) -> Result<ProbeSpec, CheckError> {
        self.spec_with(args, port, self.module(args, port, mode))
    }

    /// The spec that probes `host:port` with `module`.
    pub(super) fn spec_with(
        &self,
        args: &CheckArgs,
        port: u16,
        module: Arc<Module>,
    ) -> Result<ProbeSpec, CheckError> {
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
    pub(super) fn module(&self, args: &CheckArgs, port: u16, mode: TlsMode) -> Arc<Module> {
        let settings = if mode == TlsMode::Starttls { &self.lenient } else { &self.strict };
        let transport = Transport::of_mode(mode, || Tls { settings: settings.clone(), name: None });
        Arc::new(Module {
            // A person reads every extension the server offers.
            ehlo_metrics: crate::config::EhloMetrics::All,
            auth: self.auth.clone().filter(|_| authenticates(port, mode)),
            ..Module::new(transport, args.timeout)
        })
    }
}

/// Whether `--user` logs in on this port: every port but 25 (server-to-server relay),
/// and never on a session that has no TLS.
pub(super) fn authenticates(port: u16, mode: TlsMode) -> bool {
    port != 25 && mode != TlsMode::None
}

/// One port's outcome, and what the check found out about the port on the way.
pub(super) struct Checked {
    pub(super) spec: ProbeSpec,
    pub(super) report: ProbeReport,
    /// Set when the mode was found by sniffing a port of unknown role.
    pub(super) detected: Option<Detected>,
    /// The port sent no greeting in a plain-text mode but answered a TLS ClientHello.
    pub(super) speaks_tls: bool,
}

/// How a port of unknown role was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Detected {
    /// It greeted at once: SMTP in plain text, STARTTLS when offered.
    Greeting,
    /// No greeting, but TLS answered: implicit TLS.
    Tls,
    /// Neither: probed as opportunistic STARTTLS, which reports what went wrong.
    Nothing,
}

/// Classifies a port of unknown role: a greeting within `SNIFF_TIMEOUT` is SMTP; silence,
/// then a TLS answer to a ClientHello on a second connection, is implicit TLS.
pub(super) async fn sniff(host: &str, target: Option<std::net::SocketAddr>, tls: &TlsSettings) -> Detected {
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
pub(super) async fn answers_tls(host: &str, target: Option<std::net::SocketAddr>, tls: &TlsSettings) -> bool {
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
