//! `check HOST --deliver ADDRESS`: one delivery probe from the command line: submit a
//! message through one port, read it back over IMAP, delete it, and say how long each hop
//! took and where the message landed.
//!
//! Part of `check`: the flags become one `Module` with a `delivery:` part (errors name the
//! flags), `probe::run_recorded` runs it like a scheduled delivery probe, and the report is
//! rendered as text or JSON. Exit status: 0 when the message was delivered.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{known_mode, ms, CheckArgs, CheckError, CheckOutput, Plan};
use crate::config::{Delivery, Imap, Module, Secret, Tls, TlsMode, Transport};
use crate::probe::{self, Phase, ProbeReport};

/// The port a delivery is submitted on when no --port is given: submission with STARTTLS.
const DEFAULT_PORT: u16 = 587;
/// Leftovers younger than this are never swept by `check`: a running exporter's probes may
/// still be waiting for them.
const SWEEP_AFTER: Duration = Duration::from_secs(3600);

/// Runs the delivery and renders it.
pub(super) async fn run(args: &CheckArgs, plan: &Plan) -> Result<CheckOutput, CheckError> {
    let delivery = delivery(args, plan)?;
    let port = args.ports.first().map_or(DEFAULT_PORT, |p| p.port);
    let mode =
        args.ports.first().and_then(|p| p.mode).or(known_mode(port)).unwrap_or(TlsMode::StarttlsRequired);
    if mode == TlsMode::Starttls {
        return Err(CheckError::Flag {
            flag: "--port",
            message: format!(
                "{port}:starttls may send the message in plain text; use starttls_required, implicit or none"
            ),
        });
    }
    let base = plan.module(args, port, mode);
    let module = Arc::new(Module { delivery: Some(delivery), ..Module::clone(&base) });
    let spec = plan.spec_with(args, port, module)?;
    let report = probe::run_recorded(&spec).await;
    let text =
        if args.json { render_json(args, port, &report) } else { render_text(args, port, mode, &report) };
    Ok(CheckOutput { text, any_success: report.success() })
}

/// The delivery part of the module, from the flags.
fn delivery(args: &CheckArgs, plan: &Plan) -> Result<Delivery, CheckError> {
    let flag = |flag: &'static str, message: String| CheckError::Flag { flag, message };
    let rcpt_to = args.deliver.clone().unwrap_or_default();
    if !rcpt_to.contains('@') || rcpt_to.chars().any(|c| c.is_whitespace() || c == '<' || c == '>') {
        return Err(flag("--deliver", format!("{rcpt_to:?} is not an address")));
    }
    let mail_from = match (&args.mail_from, &args.user) {
        (Some(from), _) => from.clone(),
        (None, Some(user)) if user.contains('@') => user.clone(),
        _ => return Err(flag("--mail-from", "give the sender's address (--user is not one)".into())),
    };
    let path = args.imap_password_file.clone().unwrap_or_default();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| flag("--imap-password-file", format!("{}: {e}", path.display())))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(flag("--imap-password-file", format!("{}: the file is empty", path.display())));
    }
    let settings = plan.strict.clone();
    let tls = || Tls { settings, name: None };
    let (transport, default_port) = if args.imap_starttls {
        (Transport::Starttls { required: true, tls: tls() }, 143)
    } else {
        (Transport::Implicit { tls: tls() }, 993)
    };
    Ok(Delivery {
        mail_from,
        rcpt_to,
        require_inbox: true,
        interval: SWEEP_AFTER,
        poll_interval: Duration::from_millis(500),
        sweep_after: SWEEP_AFTER,
        imap: Imap {
            host: args.imap_host.clone(),
            port: args.imap_port.unwrap_or(default_port),
            transport,
            username: args.imap_user.clone().unwrap_or_default(),
            password: Secret::new(password),
            junk_mailbox: None,
        },
    })
}

/// The delivery phases, in the order they run.
const HOPS: [Phase; 6] =
    [Phase::ImapConnect, Phase::ImapLogin, Phase::Submit, Phase::Deliver, Phase::Fetch, Phase::Cleanup];

fn render_text(args: &CheckArgs, port: u16, mode: TlsMode, report: &ProbeReport) -> String {
    let mut out = String::new();
    let imap_host = args.imap_host.as_deref().unwrap_or(&args.host);
    let _ = writeln!(
        out,
        "Delivery to {} through {}:{port} ({}), read back over IMAP at {imap_host}:",
        args.deliver.as_deref().unwrap_or(""),
        args.host,
        mode.as_str()
    );
    let outcome = report.delivery.as_ref();
    match &report.failure {
        None => {
            let folder = outcome.and_then(|d| d.folder).map_or("?", |f| f.as_str());
            let deliver = report.phase(Phase::Deliver).map(ms).unwrap_or_default();
            let _ = writeln!(
                out,
                "  delivered in {deliver} ms, into the {folder} folder; the message was deleted"
            );
        }
        Some(f) => {
            let _ = writeln!(out, "  NOT delivered: phase {}, {} ({})", f.phase, f.reason, f.detail);
        }
    }
    let hops: Vec<String> =
        HOPS.iter().filter_map(|&p| report.phase(p).map(|d| format!("{p} {} ms", ms(d)))).collect();
    if !hops.is_empty() {
        let _ = writeln!(out, "  hops: {}", hops.join(", "));
    }
    if let Some(d) = outcome {
        if let Some(id) = &d.queue_id {
            let _ = writeln!(out, "  queue id: {id}");
        }
        if let Some(path) = d.path {
            let verdicts: Vec<String> = path
                .verdicts()
                .iter()
                .map(|(m, pass)| format!("{m} {}", if *pass { "pass" } else { "not pass" }))
                .collect();
            let _ = writeln!(
                out,
                "  Authentication-Results: {}; {} Received hops",
                verdicts.join(", "),
                path.received_hops
            );
        }
        if let Some(swept) = d.swept.filter(|n| *n > 0) {
            let _ = writeln!(out, "  deleted {swept} leftover probe messages older than an hour");
        }
    }
    out
}

#[derive(Serialize)]
struct Json<'a> {
    host: &'a str,
    port: u16,
    recipient: &'a str,
    delivered: bool,
    folder: Option<&'static str>,
    phase: Option<&'static str>,
    reason: Option<&'static str>,
    detail: Option<&'a str>,
    phases_ms: Vec<(&'static str, f64)>,
    queue_id: Option<&'a str>,
    authentication_pass: Vec<(&'static str, bool)>,
    received_hops: Option<u32>,
}

fn render_json(args: &CheckArgs, port: u16, report: &ProbeReport) -> String {
    let outcome = report.delivery.as_ref();
    let json = Json {
        host: &args.host,
        port,
        recipient: args.deliver.as_deref().unwrap_or(""),
        delivered: report.success(),
        folder: outcome.and_then(|d| d.folder).map(|f| f.as_str()),
        phase: report.failure.as_ref().map(|f| f.phase.as_str()),
        reason: report.failure.as_ref().map(|f| f.reason.as_str()),
        detail: report.failure.as_ref().map(|f| f.detail.as_str()),
        phases_ms: report.phases.iter().map(|(p, d)| (p.as_str(), d.as_secs_f64() * 1000.0)).collect(),
        queue_id: outcome.and_then(|d| d.queue_id.as_deref()),
        authentication_pass: outcome.and_then(|d| d.path).map(|p| p.verdicts().to_vec()).unwrap_or_default(),
        received_hops: outcome.and_then(|d| d.path).map(|p| p.received_hops),
    };
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
    text.push('\n');
    text
}
