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

/// Probes SMTP servers on each configured port, times every phase of the session, and
/// serves the results to Prometheus.
#[derive(Parser, Debug)]
#[command(name = "smtp_exporter", version)]
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
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = ":10027")]
    listen_address: String,

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
                println!(
                    "configuration is valid: {} modules, {} probe specs",
                    config.modules.len(),
                    config.specs.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("configuration is invalid: {e}");
                ExitCode::FAILURE
            }
        };
    }

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
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, version = env!("CARGO_PKG_VERSION"), "listening");
        }
        match app::run(listener, source, cli.shard, terminate()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the configuration");
                ExitCode::FAILURE
            }
        }
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

/// Binds `host:port`, or `:port` on every interface (IPv6 and IPv4 where possible).
async fn bind(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| invalid(address))?;
        let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        return match tokio::net::TcpListener::bind(any6).await {
            Ok(l) => Ok(l),
            Err(_) => tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await,
        };
    }
    let addr: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(address).await?.next().ok_or_else(|| invalid(address))?,
    };
    tokio::net::TcpListener::bind(addr).await
}

fn invalid(address: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid listen address {address:?}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
