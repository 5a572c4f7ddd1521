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
use crate::config::{check_address, Delivery, Imap, Module, Secret, Tls, TlsMode, Transport};
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
    // The addresses go into MAIL FROM and RCPT TO as they are: held to the rule the
    // configuration's are.
    let rcpt_to = args.deliver.clone().unwrap_or_default();
    check_address(&rcpt_to).map_err(|e| flag("--deliver", e))?;
    let mail_from = match (&args.mail_from, &args.user) {
        (Some(from), _) => {
            check_address(from).map_err(|e| flag("--mail-from", e))?;
            from.clone()
        }
        (None, Some(user)) if user.contains('@') => {
            check_address(user)
                .map_err(|e| flag("--user", format!("{e}; give the sender with --mail-from")))?;
            user.clone()
        }
        _ => return Err(flag("--mail-from", "give the sender's address (--user is not one)".into())),
    };
    let path = args.imap_password_file.clone().unwrap_or_default();
    let password = crate::files::read_secret(&path)
        .map_err(|e| flag("--imap-password-file", format!("{}: {e}", path.display())))?;
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
        imap: Imap::new(
            args.imap_host.clone(),
            args.imap_port.unwrap_or(default_port),
            transport,
            args.imap_user.clone().unwrap_or_default(),
            Secret::new(password),
        ),
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
        for skipped in d.skipped_folders.iter().flatten() {
            let _ = writeln!(out, "  folder not searched: {skipped}");
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
    skipped_folders: Vec<&'a str>,
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
        skipped_folders: outcome
            .and_then(|d| d.skipped_folders.as_ref())
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default(),
    };
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::delivery::headers::PathInfo;
    use crate::probe::delivery::{DeliveryOutcome, Folder};
    use crate::probe::{Failure, Reason};
    use crate::test_support::temp_file;

    /// A new file holding `contents`: tests run in parallel, and rewriting a file another
    /// test is reading would make it read empty.
    fn file_with(contents: &str) -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        temp_file(&format!("deliver-pw-{n}"), contents).display().to_string()
    }

    /// `check mx.example.test --deliver TO` with the IMAP login (whose password file holds
    /// `imap secret`), then `extra`.
    fn args(to: &str, extra: &[&str]) -> CheckArgs {
        let pw = file_with("imap secret\r\n");
        let mut argv = vec!["mx.example.test", "--deliver", to, "--imap-user", "inbox@example.test"];
        argv.extend(["--imap-password-file", &pw]);
        argv.extend(extra);
        super::super::tests::parse(&argv).unwrap()
    }

    /// `--user USER` with its password file.
    fn user_args(to: &str, user: &str, extra: &[&str]) -> CheckArgs {
        let pw = file_with("correct horse\n");
        let mut argv = vec!["--user", user, "--password-file", &pw];
        argv.extend(extra);
        args(to, &argv)
    }

    /// The delivery the flags make, or the error they are refused with.
    fn delivery_of(args: &CheckArgs) -> Result<Delivery, String> {
        let plan = Plan::new(args).unwrap();
        delivery(args, &plan).map_err(|e| e.to_string())
    }

    /// Issue 17: --deliver takes one bare address, as the configuration's rcpt_to does:
    /// local@domain, printable, without spaces or angle brackets (the probe puts those
    /// around it itself; a line break would smuggle in another SMTP command).
    #[test]
    fn the_recipient_must_be_one_bare_address() {
        for to in [
            "inbox.example.test",
            "",
            "in box@example.test",
            "inbox@example.test\t",
            "<inbox@example.test",
            "inbox@example.test>",
            "<inbox@example.test>",
            "@example.test",
            "inbox@",
            "inbox@example.test\r\nRSET",
        ] {
            let a = args(to, &["--mail-from", "monitor@example.test"]);
            let want =
                format!("--deliver {to:?} is not an address (local@domain, printable, no spaces or <>)");
            assert_eq!(delivery_of(&a).err(), Some(want), "{to:?}");
        }
        let a = args("inbox@example.test", &["--mail-from", "monitor@example.test"]);
        assert_eq!(delivery_of(&a).unwrap().rcpt_to, "inbox@example.test");
    }

    /// Issue 17: the sender is held to the same rule, whether --mail-from or --user gives
    /// it, and the error names the flag that did.
    #[test]
    fn the_sender_must_be_one_bare_address() {
        let a = args("inbox@example.test", &["--mail-from", "x@example.test>"]);
        let rule = "is not an address (local@domain, printable, no spaces or <>)";
        assert_eq!(delivery_of(&a).err(), Some(format!("--mail-from \"x@example.test>\" {rule}")));
        let a = user_args("inbox@example.test", "probe@", &[]);
        let want = format!("--user \"probe@\" {rule}; give the sender with --mail-from");
        assert_eq!(delivery_of(&a).err(), Some(want));
    }

    /// Issue 17: without --mail-from, the sender is --user when that is an address.
    #[test]
    fn a_user_that_is_an_address_is_the_default_sender() {
        let a = user_args("inbox@example.test", "probe@example.test", &[]);
        assert_eq!(delivery_of(&a).unwrap().mail_from, "probe@example.test");
    }

    /// Issue 17: --mail-from wins over --user, whether or not --user is an address.
    #[test]
    fn mail_from_wins_over_the_user() {
        for user in ["probe@example.test", "probe"] {
            let a = user_args("inbox@example.test", user, &["--mail-from", "monitor@example.test"]);
            assert_eq!(delivery_of(&a).unwrap().mail_from, "monitor@example.test", "--user {user}");
        }
    }

    /// Issue 17: a sender address is required when the user is not one (or there is no
    /// user): a login name is never sent as MAIL FROM.
    #[test]
    fn a_sender_address_is_required_when_the_user_is_not_one() {
        let wanted = Some("--mail-from give the sender's address (--user is not one)".to_owned());
        assert_eq!(delivery_of(&user_args("inbox@example.test", "probe", &[])).err(), wanted);
        assert_eq!(delivery_of(&args("inbox@example.test", &[])).err(), wanted);
    }

    /// Issue 17: the IMAP password file must exist and hold a password; the error names
    /// the flag and the file.
    #[test]
    fn the_imap_password_file_must_exist_and_not_be_empty() {
        let mut a = args("inbox@example.test", &["--mail-from", "monitor@example.test"]);
        a.imap_password_file = Some("/nonexistent/imap-pw".into());
        assert_eq!(
            delivery_of(&a).err(),
            Some(
                "--imap-password-file /nonexistent/imap-pw: No such file or directory (os error 2)"
                    .to_owned()
            )
        );
        let empty = file_with("\r\n");
        a.imap_password_file = Some(empty.clone().into());
        assert_eq!(delivery_of(&a).err(), Some(format!("--imap-password-file {empty}: the file is empty")));
    }

    /// Issue 17: by default the mailbox is read over implicit TLS on 993 at HOST, with the
    /// strict TLS settings, the password without its line end, and the inbox required.
    #[test]
    fn the_mailbox_is_read_over_implicit_tls_on_993_by_default() {
        let a = args("inbox@example.test", &["--mail-from", "monitor@example.test"]);
        let plan = Plan::new(&a).unwrap();
        let d = delivery(&a, &plan).unwrap();
        assert_eq!(
            (d.mail_from.as_str(), d.rcpt_to.as_str(), d.require_inbox),
            ("monitor@example.test", "inbox@example.test", true)
        );
        assert_eq!(
            (d.interval, d.poll_interval, d.sweep_after),
            (Duration::from_secs(3600), Duration::from_millis(500), Duration::from_secs(3600))
        );
        assert_eq!((d.imap.host, d.imap.port), (None, 993));
        assert_eq!(
            (d.imap.username.as_str(), d.imap.password.expose()),
            ("inbox@example.test", "imap secret")
        );
        assert_eq!(d.imap.junk_mailbox, None);
        match d.imap.transport {
            Transport::Implicit { tls } => {
                assert!(Arc::ptr_eq(&tls.settings, &plan.strict));
                assert_eq!(tls.name, None);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 17: --imap-starttls means STARTTLS (required) on 143; --imap-port and
    /// --imap-host win over the defaults.
    #[test]
    fn imap_starttls_defaults_to_143_and_the_imap_flags_win() {
        let a = args("inbox@example.test", &["--mail-from", "monitor@example.test", "--imap-starttls"]);
        let plan = Plan::new(&a).unwrap();
        let d = delivery(&a, &plan).unwrap();
        assert_eq!(d.imap.port, 143);
        match d.imap.transport {
            Transport::Starttls { required, tls } => {
                assert!(required);
                assert!(Arc::ptr_eq(&tls.settings, &plan.strict));
            }
            other => panic!("{other:?}"),
        }
        let a = args(
            "inbox@example.test",
            &[
                "--mail-from",
                "monitor@example.test",
                "--imap-host",
                "imap.example.test",
                "--imap-port",
                "10993",
            ],
        );
        let d = delivery_of(&a).unwrap();
        assert_eq!((d.imap.host.as_deref(), d.imap.port), (Some("imap.example.test"), 10993));
    }

    /// Issue 17: a delivery is never submitted over opportunistic STARTTLS (port 25's mode,
    /// or `:starttls`), which may send it in plain text; refused before any connection.
    #[tokio::test]
    async fn opportunistic_starttls_is_refused_for_a_delivery() {
        for (port, shown) in [("25", "25"), ("2526:starttls", "2526")] {
            let a = args("inbox@example.test", &["--mail-from", "monitor@example.test", "--port", port]);
            let plan = Plan::new(&a).unwrap();
            let err = run(&a, &plan).await.err().map(|e| e.to_string());
            assert_eq!(
                err,
                Some(format!(
                    "--port {shown}:starttls may send the message in plain text; use starttls_required, implicit or none"
                )),
                "--port {port}"
            );
        }
    }

    /// A report whose phases took the given milliseconds.
    fn report(phases: &[(Phase, u64)], failure: Option<(Phase, Reason, &str)>) -> ProbeReport {
        let mut report = ProbeReport::new();
        report.phases = phases.iter().map(|(p, ms)| (*p, Duration::from_millis(*ms))).collect();
        report.failure =
            failure.map(|(phase, reason, detail)| Failure { phase, reason, detail: detail.into() });
        report
    }

    /// The phases of a delivery that went through, the SMTP ones among them.
    const DELIVERED: [(Phase, u64); 8] = [
        (Phase::Connect, 375),
        (Phase::Auth, 625),
        (Phase::ImapConnect, 125),
        (Phase::ImapLogin, 250),
        (Phase::Submit, 500),
        (Phase::Deliver, 1500),
        (Phase::Fetch, 750),
        (Phase::Cleanup, 2000),
    ];

    fn delivered_report() -> ProbeReport {
        let mut r = report(&DELIVERED, None);
        r.delivery = Some(Box::new(DeliveryOutcome {
            token: "t0k3n".into(),
            queue_id: Some("4XyZ12".into()),
            folder: Some(Folder::Inbox),
            path: Some(PathInfo { dkim_pass: true, spf_pass: false, dmarc_pass: true, received_hops: 2 }),
            swept: Some(2),
            skipped_folders: Some(vec!["\"Shared\" (EXAMINE Shared: NO [NOPERM] Permission denied)".into()]),
        }));
        r
    }

    /// Issue 17: a delivered message is rendered with its time, folder, every delivery hop
    /// (in order, SMTP phases left out), its queue id, verdicts, and the leftovers swept.
    #[test]
    fn a_delivered_message_is_rendered_with_its_hops_folder_and_verdicts() {
        let a = args("inbox@example.test", &[]);
        assert_eq!(
            render_text(&a, 587, TlsMode::StarttlsRequired, &delivered_report()),
            "Delivery to inbox@example.test through mx.example.test:587 (starttls_required), \
             read back over IMAP at mx.example.test:\n\
             \x20 delivered in 1500.00 ms, into the inbox folder; the message was deleted\n\
             \x20 hops: imap_connect 125.00 ms, imap_login 250.00 ms, submit 500.00 ms, deliver 1500.00 ms, \
             fetch 750.00 ms, cleanup 2000.00 ms\n\
             \x20 queue id: 4XyZ12\n\
             \x20 Authentication-Results: dkim pass, spf not pass, dmarc pass; 2 Received hops\n\
             \x20 deleted 2 leftover probe messages older than an hour\n\
             \x20 folder not searched: \"Shared\" (EXAMINE Shared: NO [NOPERM] Permission denied)\n"
        );
    }

    /// Issue 17: a failed delivery names its phase, reason and detail; the IMAP host is
    /// --imap-host; no sweep line when nothing was swept.
    #[test]
    fn a_failed_delivery_names_its_phase_reason_and_detail() {
        let a = args("inbox@example.test", &["--imap-host", "imap.example.test"]);
        let mut r = report(
            &DELIVERED[2..6],
            Some((Phase::Deliver, Reason::NotDelivered, "not in the mailbox after 10s")),
        );
        r.delivery = Some(Box::new(DeliveryOutcome {
            queue_id: Some("4XyZ12".into()),
            swept: Some(0),
            ..DeliveryOutcome::default()
        }));
        assert_eq!(
            render_text(&a, 465, TlsMode::Implicit, &r),
            "Delivery to inbox@example.test through mx.example.test:465 (implicit), \
             read back over IMAP at imap.example.test:\n\
             \x20 NOT delivered: phase deliver, not_delivered (not in the mailbox after 10s)\n\
             \x20 hops: imap_connect 125.00 ms, imap_login 250.00 ms, submit 500.00 ms, deliver 1500.00 ms\n\
             \x20 queue id: 4XyZ12\n"
        );
    }

    /// Issue 17: a probe that failed before any delivery hop has no hops line and no
    /// outcome lines.
    #[test]
    fn a_probe_that_failed_before_the_mailbox_shows_no_hops() {
        let a = args("inbox@example.test", &[]);
        let r =
            report(&[(Phase::Resolve, 1), (Phase::Connect, 2)], Some((Phase::Connect, Reason::Refused, "x")));
        assert_eq!(
            render_text(&a, 587, TlsMode::StarttlsRequired, &r),
            "Delivery to inbox@example.test through mx.example.test:587 (starttls_required), \
             read back over IMAP at mx.example.test:\n\
             \x20 NOT delivered: phase connect, refused (x)\n"
        );
    }

    /// Issue 17: the JSON form gives every phase that ran in milliseconds, the folder,
    /// queue id, verdicts and Received hops of a delivered message.
    #[test]
    fn the_json_form_gives_each_phase_in_milliseconds() {
        let a = args("inbox@example.test", &["--json"]);
        let text = render_json(&a, 587, &delivered_report());
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({
                "host": "mx.example.test",
                "port": 587,
                "recipient": "inbox@example.test",
                "delivered": true,
                "folder": "inbox",
                "phase": null,
                "reason": null,
                "detail": null,
                "phases_ms": [
                    ["connect", 375.0],
                    ["auth", 625.0],
                    ["imap_connect", 125.0],
                    ["imap_login", 250.0],
                    ["submit", 500.0],
                    ["deliver", 1500.0],
                    ["fetch", 750.0],
                    ["cleanup", 2000.0]
                ],
                "queue_id": "4XyZ12",
                "authentication_pass": [["dkim", true], ["spf", false], ["dmarc", true]],
                "received_hops": 2,
                "skipped_folders": ["\"Shared\" (EXAMINE Shared: NO [NOPERM] Permission denied)"]
            })
        );
    }

    /// Issue 17: the JSON form of a failed delivery names its phase, reason and detail,
    /// with null for what was never learned.
    #[test]
    fn the_json_form_of_a_failure_names_its_phase_reason_and_detail() {
        let a = args("inbox@example.test", &["--json"]);
        let r =
            report(&[(Phase::Connect, 250)], Some((Phase::Connect, Reason::Refused, "connection refused")));
        let text = render_json(&a, 465, &r);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({
                "host": "mx.example.test",
                "port": 465,
                "recipient": "inbox@example.test",
                "delivered": false,
                "folder": null,
                "phase": "connect",
                "reason": "refused",
                "detail": "connection refused",
                "phases_ms": [["connect", 250.0]],
                "queue_id": null,
                "authentication_pass": [],
                "received_hops": null,
                "skipped_folders": []
            })
        );
    }
}
