//! `smtp_exporter check HOST`: probe a mail server once on each port and explain the result
//! to a person.
//!
//! Beside the scheduled flow, reusing its parts: the command line becomes one `Module` and
//! `ProbeSpec` per port, built directly (errors speak of the command line's flags), each
//! port is probed once by `probe::run`, and the reports are rendered as a table or JSON
//! with a recommendation in plain words. A port outside 25, 465, 587 and 2525 given without
//! a mode is first sniffed: a greeting means SMTP, silence and a TLS answer mean implicit
//! TLS. Nothing here touches the metrics registry.
//!
//! The folder: `args` (the command line), `plan` (modules and specs per port, sniffing),
//! [`run`] here (probe each port), `advice` and `render` (the words, the table, the JSON);
//! `domain` checks a mail domain as a sender would, `deliver` runs `--deliver`.

use crate::config::{self, TlsMode};

use crate::probe::{self, PortState};

mod advice;
mod args;
mod deliver;
mod domain;
mod plan;
mod render;
#[cfg(test)]
mod tests;

use advice::recommend;
pub use args::{CheckArgs, PortArg};
use plan::{answers_tls, known_mode, sniff, Checked, Detected, Plan, WELL_KNOWN};
use render::{ms, push_table, render_json, render_table};

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
