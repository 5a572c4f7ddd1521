//! The `smtp_exporter` binary: command line, logging, listener, signals. Everything else
//! lives in the library (`app::run` and the modules it wires).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use smtp_exporter::app::{self, ConfigSource};
use smtp_exporter::check::{self, CheckArgs};
use smtp_exporter::config::Shard;
use smtp_exporter::logging::{self, LogFormat, LogLevel};

/// `--version`: the release, the git revision and the build date.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("SMTP_EXPORTER_REVISION"),
    ", built ",
    env!("SMTP_EXPORTER_BUILD_DATE"),
    ", rustc ",
    env!("SMTP_EXPORTER_RUSTC_VERSION"),
    ")"
);

/// Probes SMTP servers on each configured port, times every phase of the session, and
/// serves the results to Prometheus.
#[derive(Parser, Debug)]
#[command(name = "smtp_exporter", version = VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// YAML configuration file. Without it, an embedded default probes localhost on
    /// ports 25, 465, 587 and 2525.
    #[arg(long = "config.file", value_name = "PATH")]
    config_file: Option<PathBuf>,

    /// Validate the configuration, print a summary, and exit.
    #[arg(long = "config.check")]
    config_check: bool,

    /// Address to serve HTTP on: host:port, or :port for every interface.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = ":10027", value_parser = ListenAddress::parse)]
    listen_address: ListenAddress,

    /// YAML file with TLS, basic authentication and response headers for every endpoint,
    /// in the Prometheus exporter-toolkit format; re-read when it changes.
    #[arg(long = "web.config.file", value_name = "PATH")]
    web_config_file: Option<PathBuf>,

    /// Serve POST /-/reload (SIGHUP reloads in any case).
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,

    /// Path under which to serve the metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics")]
    telemetry_path: String,

    /// Prefix of every path the exporter serves, e.g. /smtp. Defaults to the path of
    /// --web.external-url, else /.
    #[arg(long = "web.route-prefix", value_name = "PATH")]
    route_prefix: Option<String>,

    /// The URL under which the exporter is reached, behind a reverse proxy
    /// (https://proxy.example/smtp/): the status page's links start with its path.
    #[arg(long = "web.external-url", value_name = "URL")]
    external_url: Option<String>,

    /// A host name clients use to reach the exporter, besides its address, localhost and
    /// the host of --web.external-url: /-/reload, /config, /transcript and
    /// /probe?debug=true answer only to those (a guard against DNS rebinding). Repeatable.
    #[arg(long = "web.allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,

    /// Probe only the specs of shard INDEX out of COUNT replicas (stable hash of the spec's
    /// labels). INDEX may be a StatefulSet pod name like smtp-exporter-2.
    #[arg(long = "shard", value_name = "INDEX/COUNT", value_parser = Shard::parse)]
    shard: Option<Shard>,

    /// Only log messages with this level or above.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    log_level: LogLevel,

    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Probe HOST once on 25, 465, 587 and 2525 (or --port), print what works and why not,
    /// and exit non-zero when nothing works.
    Check(CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    if let Some(Command::Check(args)) = &cli.command {
        return run_check(args);
    }
    // The three path flags depend on each other: checked together, as a usage error.
    let paths = match app::Paths::new(
        cli.route_prefix.as_deref(),
        &cli.telemetry_path,
        cli.external_url.as_deref(),
    ) {
        Ok(mut paths) => {
            paths.allowed_hosts.extend(cli.allowed_hosts.iter().cloned());
            paths
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let source = match &cli.config_file {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::embedded(),
    };

    if cli.config_check {
        return match source.load() {
            Ok(mut config) => {
                if let Some(shard) = cli.shard {
                    config.keep_shard(shard);
                }
                for warning in &config.warnings {
                    eprintln!("warning: {warning}");
                }
                if let Some(web) = &cli.web_config_file {
                    if let Err(e) = smtp_exporter::app::check_web_config(web) {
                        eprintln!("web configuration is invalid: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                println!(
                    "configuration is valid: {} modules, {} probe specs",
                    config.modules.len(),
                    config.schedule.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("configuration is invalid: {e}");
                ExitCode::FAILURE
            }
        };
    }

    // The configuration first: a bad one fails the start before anything listens.
    let options = app::Options {
        shard: cli.shard,
        web_config_file: cli.web_config_file.clone(),
        enable_lifecycle: cli.enable_lifecycle,
        paths,
    };
    let prepared = match app::prepare(source, &options) {
        Ok(prepared) => prepared,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the configuration");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match bind(&cli.listen_address).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(address = %cli.listen_address, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        // Registered before anything runs, so that a failure is an error at start: the
        // fallback used to resolve at once, ending the exporter as if it had been asked to.
        let terminate = match terminate() {
            Ok(terminate) => terminate,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM and SIGINT");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, version = env!("CARGO_PKG_VERSION"), "listening");
        }
        app::serve(prepared, listener, terminate).await;
        ExitCode::SUCCESS
    })
}

/// Runs `check` on a small runtime and prints its output.
fn run_check(args: &CheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(check::run(args)) {
        Ok(output) => {
            print!("{}", output.text);
            if output.any_success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("check: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where to serve HTTP, checked when the command line is read: `host:port`, `[v6]:port`,
/// or `:port` for every interface.
#[derive(Clone, Debug)]
enum ListenAddress {
    AnyInterface(u16),
    Host(String, u16),
}

impl ListenAddress {
    fn parse(text: &str) -> Result<ListenAddress, String> {
        let bad_port =
            |p: &str| format!("{p:?} is not a port number from 0 to 65535 (use host:port or :port)");
        if let Some(port) = text.strip_prefix(':') {
            return port.parse().map(ListenAddress::AnyInterface).map_err(|_| bad_port(port));
        }
        let (host, port) = text.rsplit_once(':').ok_or("the port is missing (use host:port or :port)")?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err()) {
            return Err(format!("{host:?} is not a host name or address (use [v6]:port for IPv6)"));
        }
        let port = port.parse().map_err(|_| bad_port(port))?;
        Ok(ListenAddress::Host(host.to_owned(), port))
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::AnyInterface(port) => write!(f, ":{port}"),
            ListenAddress::Host(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            ListenAddress::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// Binds the address; `:port` binds every interface (IPv6 and IPv4 where possible).
async fn bind(address: &ListenAddress) -> std::io::Result<tokio::net::TcpListener> {
    match address {
        ListenAddress::AnyInterface(port) => {
            let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, *port));
            listen(any6).or_else(|_| listen(SocketAddr::from(([0, 0, 0, 0], *port))))
        }
        ListenAddress::Host(host, port) => {
            let mut last = None;
            for addr in tokio::net::lookup_host((host.as_str(), *port)).await? {
                match listen(addr) {
                    Ok(listener) => return Ok(listener),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host} has no address"))))
        }
    }
}

/// The longest queue of connections not yet accepted: a flood of new connections should
/// fill the exporter's slots (which choose who gives way), not a kernel queue of 128 that
/// drops a scraper's SYN. The kernel caps it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` with [`LISTEN_BACKLOG`], the address reusable at once after a restart.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A future that resolves on SIGINT or SIGTERM, registered now.
fn terminate() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
