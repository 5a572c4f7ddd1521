//! End-to-end delivery against the real parts (issue 15): Postfix takes the message and
//! delivers deliver.test to Dovecot over LMTP; Dovecot serves the mailbox over IMAP, files
//! `+junk` and `+archive` mail by a Sieve rule; Postfix holds `+held` and discards `+void`.
//! The mailbox's Maildir is read directly, so "nothing left behind" does not rest on the
//! exporter's own IMAP view.

use super::*;

/// The delivery modules, on Postfix's submission port with AUTH, reading the mailbox over
/// IMAP with implicit TLS or STARTTLS. `extra` adds modules (YAML, indented as modules).
fn delivery_config(mta: &Mta, interval: &str, extra: &str, targets: &str) -> String {
    let (ca, user, pw) = (mta.get("CA_FILE"), mta.get("AUTH_USER"), mta.get("AUTH_PASSWORD_FILE"));
    let (imap, imaps, inbox, inbox_pw) =
        (mta.get("IMAP_PORT"), mta.get("IMAPS_PORT"), mta.get("INBOX_USER"), mta.get("INBOX_PASSWORD_FILE"));
    let module = |name: &str, rcpt: &str, imap_tls: &str, imap_port: &str, more: &str| {
        format!(
            r#"  {name}:
    tls: starttls_required
    timeout: 4s
    tls_config: {{ ca_file: {ca} }}
    auth: {{ username: {user}, password_file: {pw} }}
    delivery:
      mail_from: monitor@example.test
      rcpt_to: {rcpt}
      interval: {interval}
      poll_interval: 500ms
      sweep_after: 10s
{more}      imap:
        host: localhost
        port: {imap_port}
        tls: {imap_tls}
        tls_config: {{ ca_file: {ca} }}
        username: {inbox}
        password_file: {inbox_pw}
"#
        )
    };
    let (local, domain) = inbox.split_once('@').expect("INBOX_USER is an address");
    let plus = |tag: &str| format!("{local}+{tag}@{domain}");
    format!(
        "modules:\n{}{}{}{}{}{extra}targets:\n{targets}",
        module("deliver", inbox, "implicit", imaps, ""),
        module("deliver_starttls", inbox, "starttls", imap, ""),
        module("deliver_junk", &plus("junk"), "implicit", imaps, ""),
        module("deliver_junk_allowed", &plus("junk"), "implicit", imaps, "      require_inbox: false\n"),
        module("deliver_archive", &plus("archive"), "implicit", imaps, ""),
    )
}

/// Probe messages in the Maildir, in every folder: files holding the token header.
fn probe_messages(mta: &Mta) -> Result<Vec<PathBuf>, String> {
    let root = PathBuf::from(mta.get("INBOX_MAILDIR"));
    let mut found = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Dovecot creates the Maildir on first delivery.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => return Ok(found),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.parent().is_some_and(|p| p.ends_with("new") || p.ends_with("cur")) {
                let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                if String::from_utf8_lossy(&text).contains("X-Smtp-Exporter-Probe:") {
                    found.push(path);
                }
            }
        }
    }
    Ok(found)
}

/// The value of a probe sample of `module`, if present.
fn of(samples: &[Sample], name: &str, module: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut all = vec![("module", module)];
    all.extend_from_slice(labels);
    find(samples, name, &all).first().map(|s| s.value)
}

/// Every delivery module against Postfix, LMTP and Dovecot: inbox over implicit TLS and
/// STARTTLS IMAP, junk (a failure under require_inbox, a pass without), another folder,
/// a discarded message (`not_delivered` within the timeout), a wrong IMAP password
/// (`imap_auth_failed`, and nothing submitted); the Authentication-Results verdicts and the
/// hops of the real path; no probe message left in the Maildir; promtool is clean.
pub(super) fn delivery_through_postfix_lmtp_and_dovecot(mta: &Mta) -> Check {
    let (sub, ca, user, pw) =
        (mta.get("SUBMISSION_PORT"), mta.get("CA_FILE"), mta.get("AUTH_USER"), mta.get("AUTH_PASSWORD_FILE"));
    let (imaps, inbox, inbox_pw) =
        (mta.get("IMAPS_PORT"), mta.get("INBOX_USER"), mta.get("INBOX_PASSWORD_FILE"));
    let (local, domain) = inbox.split_once('@').ok_or("INBOX_USER is not an address")?;
    let extra = format!(
        r#"  deliver_void:
    tls: starttls_required
    timeout: 2s
    tls_config: {{ ca_file: {ca} }}
    auth: {{ username: {user}, password_file: {pw} }}
    delivery:
      mail_from: monitor@example.test
      rcpt_to: {local}+void@{domain}
      interval: 1m
      imap: {{ host: localhost, port: {imaps}, tls: implicit, tls_config: {{ ca_file: {ca} }}, username: {inbox}, password_file: {inbox_pw} }}
  deliver_wrong_imap_password:
    tls: starttls_required
    timeout: 4s
    tls_config: {{ ca_file: {ca} }}
    auth: {{ username: {user}, password_file: {pw} }}
    delivery:
      mail_from: monitor@example.test
      rcpt_to: {inbox}
      interval: 1m
      imap: {{ host: localhost, port: {imaps}, tls: implicit, tls_config: {{ ca_file: {ca} }}, username: {inbox}, password: wrong-imap-password }}
"#
    );
    let modules = [
        "deliver",
        "deliver_starttls",
        "deliver_junk",
        "deliver_junk_allowed",
        "deliver_archive",
        "deliver_void",
        "deliver_wrong_imap_password",
    ];
    let ports: String = modules.iter().map(|m| format!("      - {{ port: {sub}, module: {m} }}\n")).collect();
    let targets = format!("  - name: postfix\n    host: localhost\n    ports:\n{ports}");
    let config = delivery_config(mta, "1m", &extra, &targets);
    let path = mta.state_dir.join("delivery.yml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let samples = domains::scrape_until(&exporter, Duration::from_secs(30), "every delivery probe", |s| {
        modules.iter().all(|m| of(s, "smtp_probe_success", m, &[]).is_some())
    })?;
    let failure = |module: &str, phase: &str, reason: &str| -> Check {
        of(&samples, "smtp_probe_failure_info", module, &[("phase", phase), ("reason", reason)])
            .map(|_| ())
            .ok_or_else(|| format!("{module}: expected a failure in {phase} with {reason}"))
    };
    for module in ["deliver", "deliver_starttls", "deliver_junk_allowed", "deliver_archive"] {
        if of(&samples, "smtp_probe_success", module, &[]) != Some(1.0) {
            return Err(format!("{module}: the delivery probe should succeed"));
        }
    }
    let folders = [
        ("deliver", "inbox"),
        ("deliver_starttls", "inbox"),
        ("deliver_junk", "junk"),
        ("deliver_junk_allowed", "junk"),
        ("deliver_archive", "other"),
    ];
    for (module, folder) in folders {
        if of(&samples, "smtp_delivery_folder_info", module, &[("folder", folder)]) != Some(1.0) {
            return Err(format!("{module}: expected the message in {folder}"));
        }
    }
    failure("deliver_junk", "deliver", "delivered_to_junk")?;
    failure("deliver_void", "deliver", "not_delivered")?;
    failure("deliver_wrong_imap_password", "imap_login", "imap_auth_failed")?;
    // The verdicts Postfix's header_checks prepended, and the two hops (Postfix, Dovecot's
    // LMTP).
    for (method, pass) in [("dkim", 1.0), ("spf", 1.0), ("dmarc", 0.0)] {
        if of(&samples, "smtp_delivery_authentication_pass", "deliver", &[("method", method)]) != Some(pass) {
            return Err(format!("deliver: {method} should read {pass}"));
        }
    }
    if of(&samples, "smtp_delivery_received_hops", "deliver", &[]) != Some(2.0) {
        return Err("deliver: the message should have passed two Received hops (Postfix, LMTP)".into());
    }
    // Each phase ran, with the not-delivered one held to the module's 2 s deadline.
    for phase in ["imap_connect", "imap_login", "submit", "deliver", "fetch", "cleanup"] {
        if of(&samples, "smtp_probe_phase_duration_seconds", "deliver", &[("phase", phase)]).is_none() {
            return Err(format!("deliver: no {phase} phase"));
        }
    }
    let void = of(&samples, "smtp_probe_duration_seconds", "deliver_void", &[]).unwrap_or(f64::NAN);
    if !(2.0..3.5).contains(&void) {
        return Err(format!("deliver_void: took {void} s; its deadline is 2 s"));
    }
    let left = probe_messages(mta)?;
    if !left.is_empty() {
        return Err(format!("probe messages left in the mailbox: {left:?}"));
    }
    // The status page says where each delivered message went.
    let (status, page) = http_get(exporter.addr, "/")?;
    for folder in ["inbox", "junk", "other"] {
        if status != 200 || !page.contains(&format!("data-folder=\"{folder}\">delivered to {folder} in ")) {
            return Err(format!("the status page does not show a delivery to {folder}"));
        }
    }
    // The wrong IMAP password: nothing was submitted for it, and no password in the log.
    let log = std::fs::read_to_string(path.with_extension("log")).map_err(|e| e.to_string())?;
    if !log.contains("imap_auth_failed") {
        return Err(
            "the exporter's log does not show the failed IMAP login; the leak check proves nothing".into()
        );
    }
    for secret in [
        "wrong-imap-password",
        &std::fs::read_to_string(mta.get("INBOX_PASSWORD_FILE")).map_err(|e| e.to_string())?,
    ] {
        if log.contains(secret) || exporter.exposition()?.contains(secret) {
            return Err("an IMAP password appears in the log or the metrics".into());
        }
    }
    promtool_check_metrics(&exporter.exposition()?)
}

/// A message held in Postfix's queue for ~3 s shows a `deliver` phase of that delay.
pub(super) fn held_message_shows_in_the_deliver_phase(mta: &Mta) -> Check {
    let (local, domain) = mta.get("INBOX_USER").split_once('@').ok_or("INBOX_USER is not an address")?;
    let held = format!("{local}+held@{domain}");
    let targets = format!(
        "  - name: postfix\n    host: localhost\n    ports: [{{ port: {}, module: deliver }}]\n",
        mta.get("SUBMISSION_PORT")
    );
    let config = delivery_config(mta, "1m", "", &targets)
        .replacen(&format!("rcpt_to: {}\n", mta.get("INBOX_USER")), &format!("rcpt_to: {held}\n"), 1)
        .replacen("timeout: 4s", "timeout: 15s", 1)
        .replacen("sweep_after: 10s", "sweep_after: 15s", 1);
    let path = mta.state_dir.join("delivery-held.yml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let conf = mta.get("POSTFIX_CONF");
    wait_for_held(conf, Duration::from_secs(10))?;
    let held_for = Duration::from_secs(3);
    std::thread::sleep(held_for);
    release_held(conf)?;
    let samples = domains::scrape_until(&exporter, Duration::from_secs(15), "the held probe", |s| {
        of(s, "smtp_probe_success", "deliver", &[]).is_some()
    })?;
    if of(&samples, "smtp_probe_success", "deliver", &[]) != Some(1.0) {
        return Err("the held message should arrive once released".into());
    }
    let deliver =
        of(&samples, "smtp_probe_phase_duration_seconds", "deliver", &[("phase", "deliver")]).unwrap_or(0.0);
    if !(held_for.as_secs_f64()..held_for.as_secs_f64() + 5.0).contains(&deliver) {
        return Err(format!("deliver took {deliver} s; the message was held for {held_for:?}"));
    }
    Ok(())
}

/// Waits until Postfix's hold queue has a message.
fn wait_for_held(conf: &str, within: Duration) -> Check {
    let deadline = Instant::now() + within;
    loop {
        let queue = run("postqueue", &["-c", conf, "-j"])?;
        if queue.contains("\"queue_name\": \"hold\"") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no held message in Postfix's queue within {within:?}: {queue}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Releases every held message and has Postfix deliver it now.
fn release_held(conf: &str) -> Check {
    run("postsuper", &["-c", conf, "-H", "ALL"])?;
    run("postqueue", &["-c", conf, "-f"]).map(|_| ())
}

/// A probe killed between submit and cleanup leaves its message; the next probe, once the
/// message is older than `sweep_after` (10 s), deletes it (`smtp_delivery_swept_messages`).
pub(super) fn a_killed_probe_leaves_a_message_the_next_one_sweeps(mta: &Mta) -> Check {
    let (local, domain) = mta.get("INBOX_USER").split_once('@').ok_or("INBOX_USER is not an address")?;
    let held = format!("{local}+held@{domain}");
    let targets = format!(
        "  - name: postfix\n    host: localhost\n    ports: [{{ port: {}, module: deliver }}]\n",
        mta.get("SUBMISSION_PORT")
    );
    let normal = delivery_config(mta, "10s", "", &targets);
    let holding =
        normal.replacen(&format!("rcpt_to: {}\n", mta.get("INBOX_USER")), &format!("rcpt_to: {held}\n"), 1);
    let first = mta.state_dir.join("delivery-killed.yml");
    std::fs::write(&first, holding).map_err(|e| e.to_string())?;
    let mut exporter = Exporter::spawn(&first, &[], None)?;
    let conf = mta.get("POSTFIX_CONF");
    wait_for_held(conf, Duration::from_secs(10))?;
    // Killed mid-probe: submitted, waiting in `deliver`.
    exporter.child.kill().map_err(|e| e.to_string())?;
    let _ = exporter.child.wait();
    let killed_at = Instant::now();
    release_held(conf)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe_messages(mta)?.len() != 1 {
        if Instant::now() > deadline {
            return Err(format!("the killed probe's message did not land: {:?}", probe_messages(mta)?));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = mta.state_dir.join("delivery-sweep.yml");
    std::fs::write(&second, normal).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&second, &[], None)?;
    let samples = domains::scrape_until(&exporter, Duration::from_secs(40), "a probe that sweeps", |s| {
        of(s, "smtp_delivery_swept_messages", "deliver", &[]).is_some_and(|n| n >= 1.0)
    })?;
    if of(&samples, "smtp_delivery_swept_messages", "deliver", &[]) != Some(1.0) {
        return Err("exactly the one leftover should be swept".into());
    }
    if killed_at.elapsed() < Duration::from_secs(10) {
        return Err("swept before the leftover was older than sweep_after".into());
    }
    let left = probe_messages(mta)?;
    if !left.is_empty() {
        return Err(format!("probe messages left after the sweep: {left:?}"));
    }
    Ok(())
}

/// 100 delivery probes (20 specs every 10 s, all into the same mailbox, overlapping) leave
/// no probe message behind, and none fails.
pub(super) fn a_hundred_probes_leave_the_mailbox_empty(mta: &Mta) -> Check {
    let targets: String = (0..20)
        .map(|i| {
            format!(
                "  - name: d{i:02}\n    host: localhost\n    ports: [{{ port: {}, module: deliver }}]\n",
                mta.get("SUBMISSION_PORT")
            )
        })
        .collect();
    let path = mta.state_dir.join("delivery-hundred.yml");
    std::fs::write(&path, delivery_config(mta, "10s", "", &targets)).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let samples = domains::scrape_until(&exporter, Duration::from_secs(90), "100 delivery probes", |s| {
        find(s, "smtp_probes_total", &[("module", "deliver")]).iter().map(|x| x.value).sum::<f64>() >= 100.0
    })?;
    let failures: f64 =
        find(&samples, "smtp_probe_failures_total", &[("module", "deliver")]).iter().map(|x| x.value).sum();
    if failures != 0.0 {
        return Err(format!("{failures} of the delivery probes failed"));
    }
    // Probes still run; between two of them (each takes some tens of milliseconds) the
    // mailbox must be empty: what a probe delivered, it deleted.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut most = 0;
    loop {
        let left = probe_messages(mta)?.len();
        if left == 0 {
            return Ok(());
        }
        most = most.max(left);
        if Instant::now() > deadline {
            return Err(format!(
                "the mailbox never emptied after 100 probes (up to {most} probe messages seen)"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `check HOST --deliver ADDRESS` against the real parts: delivered into the inbox (exit
/// 0, every hop named, the verdicts), and a discarded message (exit 1, `not_delivered`
/// within `--timeout`), read over STARTTLS IMAP; the IMAP password never printed.
pub(super) fn check_deliver_on_postfix_and_dovecot(mta: &Mta) -> Check {
    let bin = env!("CARGO_BIN_EXE_smtp_exporter");
    let inbox = mta.get("INBOX_USER");
    let (local, domain) = inbox.split_once('@').ok_or("INBOX_USER is not an address")?;
    let void = format!("{local}+void@{domain}");
    let submission = format!("{}:starttls_required", mta.get("SUBMISSION_PORT"));
    let common = |to: &str, imap: &[&str]| {
        let mut a: Vec<String> = [
            "check",
            "localhost",
            "--port",
            &submission,
            "--user",
            mta.get("AUTH_USER"),
            "--password-file",
            mta.get("AUTH_PASSWORD_FILE"),
            "--ca-file",
            mta.get("CA_FILE"),
            "--deliver",
            to,
            "--mail-from",
            "monitor@example.test",
            "--imap-user",
            inbox,
            "--imap-password-file",
            mta.get("INBOX_PASSWORD_FILE"),
            "--timeout",
            "3s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(imap.iter().map(|s| s.to_string()));
        a
    };
    let run_check = |args: Vec<String>| -> Result<(i32, String), String> {
        let out = Command::new(bin).args(&args).output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.code().unwrap_or(-1), text))
    };
    let (code, text) = run_check(common(inbox, &["--imap-port", mta.get("IMAPS_PORT")]))?;
    let wanted = [
        "delivered in",
        "into the inbox folder",
        "hops: imap_connect",
        "deliver",
        "cleanup",
        "dkim pass, spf pass, dmarc not pass; 2 Received hops",
    ];
    if code != 0 || !wanted.iter().all(|w| text.contains(w)) {
        return Err(format!("check --deliver: exit {code}, output:\n{text}"));
    }
    let (code, text) = run_check(common(&void, &["--imap-port", mta.get("IMAP_PORT"), "--imap-starttls"]))?;
    if code != 1 || !text.contains("NOT delivered: phase deliver, not_delivered") {
        return Err(format!("check --deliver to a discarding address: exit {code}, output:\n{text}"));
    }
    let password = std::fs::read_to_string(mta.get("INBOX_PASSWORD_FILE")).map_err(|e| e.to_string())?;
    if text.contains(password.trim()) {
        return Err("the IMAP password is printed".into());
    }
    let left = probe_messages(mta)?;
    if !left.is_empty() {
        return Err(format!("check left probe messages: {left:?}"));
    }
    Ok(())
}

/// Issue 24: a message that is not the probe's, with a subject like a probe's and a header
/// of the same name with another token, put in the inbox by hand, is neither deleted nor
/// flagged by 20 probes that each deliver, find and delete their own message.
pub(super) fn a_foreign_message_survives_twenty_probes(mta: &Mta) -> Check {
    let inbox = mta.get("INBOX_USER");
    let new = PathBuf::from(mta.get("INBOX_MAILDIR")).join("new");
    std::fs::create_dir_all(&new).map_err(|e| format!("{}: {e}", new.display()))?;
    let marker = format!("foreign-{}", std::process::id());
    let foreign = format!(
        "From: someone@example.test\r\nTo: {inbox}\r\nSubject: smtp_exporter delivery probe 1700000000-0123456789abcdef\r\n\
         X-Smtp-Exporter-Probe: not-ours-{marker}\r\nMessage-ID: <{marker}@example.test>\r\n\r\nnot the probe's\r\n"
    );
    let file = new.join(format!("1700000000.{marker}.localhost"));
    std::fs::write(&file, foreign).map_err(|e| format!("{}: {e}", file.display()))?;
    for round in 0..20 {
        let out = check_deliver_to_inbox(mta, mta.get("CA_FILE"))
            .args(["--imap-port", mta.get("IMAPS_PORT")])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "probe {round}: exit {:?}: {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    // Dovecot moves it from new/ to cur/ and writes its flags after ":2,"; T is \Deleted.
    let mut found = Vec::new();
    for dir in ["new", "cur"] {
        let dir = PathBuf::from(mta.get("INBOX_MAILDIR")).join(dir);
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&marker)) {
                found.push(path);
            }
        }
    }
    let [path] = &found[..] else { return Err(format!("the foreign message: {found:?}")) };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let flags = name.split_once(":2,").map_or("", |(_, f)| f);
    if flags.contains('T') {
        return Err(format!("the foreign message was flagged \\Deleted: {name}"));
    }
    std::fs::remove_file(path).map_err(|e| e.to_string())?;
    let left = probe_messages(mta)?;
    if !left.is_empty() {
        return Err(format!("probe messages left in the mailbox: {left:?}"));
    }
    Ok(())
}

/// Issue 24: the release build's `check --deliver` against an IMAP server that announces a
/// 512 MiB literal (in its greeting, and in its answer to LOGIN) peaks under 20 MB of RSS,
/// and fails as `imap_protocol` naming the size. The IMAP server is testkit's fake (its
/// hostile modes); the SMTP side is the real Postfix, which is never reached with a message.
pub(super) fn check_deliver_against_a_huge_literal_stays_small(mta: &Mta) -> Check {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let pki = testkit::pki::TestPki::new();
    let inbox = mta.get("INBOX_USER");
    let password = std::fs::read_to_string(mta.get("INBOX_PASSWORD_FILE")).map_err(|e| e.to_string())?;
    let base = testkit::imap::Behaviour {
        username: inbox.to_owned(),
        password: password.trim().to_owned(),
        ..testkit::imap::Behaviour::default()
    };
    let cases = [
        testkit::imap::Behaviour { greeting: "* 1 FETCH (BODY[] {536870000}".into(), ..base.clone() },
        testkit::imap::Behaviour {
            raw: vec![("LOGIN".into(), b"* CAPABILITY {536870000}\r\n".to_vec())],
            ..base.clone()
        },
    ];
    // One CA file for both sides: Postfix's CA and the fake IMAP server's.
    let bundle = mta.state_dir.join("ca-bundle-huge-literal.pem");
    let cas = [mta.get("CA_FILE").into(), pki.ca_file.clone()]
        .iter()
        .map(|p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<Vec<String>, String>>()?;
    std::fs::write(&bundle, cas.concat()).map_err(|e| e.to_string())?;
    for behaviour in cases {
        let imap = runtime.block_on(testkit::imap::FakeImap::start(behaviour, &pki));
        let mut command = check_deliver_to_inbox(mta, &bundle.display().to_string());
        command.args(["--imap-host", "127.0.0.1", "--imap-port", &imap.port().to_string()]);
        let run = testkit::process::run_measured(command).map_err(|e| e.to_string())?;
        let (code, text) = (run.code.unwrap_or(-1), run.output);
        if code != 1 || !text.contains("imap_protocol") || !text.contains("literal of 536870000 bytes") {
            return Err(format!("check --deliver: exit {code}, output:\n{text}"));
        }
        let max_rss_kib = run.peak_kib.ok_or("/proc gave no peak")?;
        if max_rss_kib >= 20 * 1000 {
            return Err(format!("check --deliver peaked at {max_rss_kib} KiB (bound 20 MB):\n{text}"));
        }
        println!("    check --deliver against a 512 MiB literal: peak RSS {max_rss_kib} KiB");
    }
    Ok(())
}

/// `check localhost --deliver INBOX_USER` through Postfix's submission port with AUTH,
/// trusting `ca_file`, reading the inbox back as INBOX_USER (`--timeout 5s`); the caller
/// adds where the IMAP server is.
fn check_deliver_to_inbox(mta: &Mta, ca_file: &str) -> Command {
    let inbox = mta.get("INBOX_USER");
    let mut command = Command::new(env!("CARGO_BIN_EXE_smtp_exporter"));
    command
        .args(["check", "localhost", "--port", &format!("{}:starttls_required", mta.get("SUBMISSION_PORT"))])
        .args(["--user", mta.get("AUTH_USER"), "--password-file", mta.get("AUTH_PASSWORD_FILE")])
        .args(["--ca-file", ca_file, "--deliver", inbox, "--mail-from", "monitor@example.test"])
        .args(["--imap-user", inbox, "--imap-password-file", mta.get("INBOX_PASSWORD_FILE")])
        .args(["--timeout", "5s"]);
    command
}
