//! The `check` command line: [`CheckArgs`] as clap parses it, and the `--port` and
//! `--dns-server` values.

use std::path::PathBuf;
use std::time::Duration;

use strum::VariantNames;

use crate::config::{self, TlsMode};

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
