//! Delivery probe tests: a module with `delivery:` against the fake SMTP server, whose
//! DATA hook files the message into the fake IMAP server's store (or drops it), and the
//! fake IMAP server the probe reads it back from. Each test names the behaviour it guards.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smtp_exporter::config::ProbeSpec;
use smtp_exporter::probe::delivery::headers::PathInfo;
use smtp_exporter::probe::delivery::Folder;
use smtp_exporter::probe::{self, Phase, ProbeReport, Reason};

use crate::support::{assert_failed, phases, spec};
use testkit::imap::{self, FakeImap, Mailstore};
use testkit::pki::TestPki;
use testkit::smtp::{self, FakeSmtp, MessageHook};

/// The probe against hostile and broken IMAP servers (issue 24).
mod hostile;

const SMTP_AUTH: &str = "auth: { username: probe@example.test, password: correct horse }";
const IMAP_PASSWORD: &str = "imap secret";
const TOKEN_HEADER: &str = "X-Smtp-Exporter-Probe";

/// What the hook of [`with_path`] puts on top of the message, as an MX and a submission
/// server would: two Received hops and the MX's verdicts.
const PATH_HEADERS: &[u8] = b"Received: from submit.fake.test by mx.fake.test with ESMTPS id FAKE1;\r\n\
\tMon, 30 Nov 2026 11:00:01 +0000\r\n\
Authentication-Results: mx.fake.test; dkim=pass header.d=example.test;\r\n\
\tspf=pass smtp.mailfrom=example.test; dmarc=fail (p=none) header.from=example.test\r\n\
Received: from client by submit.fake.test with ESMTPSA id FAKE0; Mon, 30 Nov 2026 11:00:00 +0000\r\n";

/// The fake MTA and mailbox of one test, and the PKI both serve from.
struct Rig {
    smtp: FakeSmtp,
    imap: FakeImap,
    store: Mailstore,
    pki: TestPki,
}

impl Rig {
    /// Starts the IMAP server with `imap`, then the SMTP server with what `smtp` makes of
    /// the store (its DATA hook delivers there).
    async fn start(imap: imap::Behaviour, smtp: impl FnOnce(&Mailstore) -> smtp::Behaviour) -> Rig {
        let pki = TestPki::new();
        let imap = FakeImap::start(imap, &pki).await;
        let store = imap.store();
        let smtp = FakeSmtp::start(smtp(&store), &pki).await;
        Rig { smtp, imap, store, pki }
    }

    /// A delivery module on the fake servers: STARTTLS and AUTH on the SMTP side, implicit
    /// TLS on the IMAP side, `timeout: 5s`. `module` adds lines to the module (a `timeout`
    /// there wins), `delivery` to its `delivery:`, and `imap` fields (`key: value`) to the
    /// flow mapping of its `imap:` (a key there wins).
    fn spec(&self, module: &str, delivery: &str, imap: &[&str]) -> ProbeSpec {
        spec(&self.module_yaml(module, delivery, imap), self.smtp.port())
    }

    /// The module YAML of [`Rig::spec`], unindented.
    fn module_yaml(&self, module: &str, delivery: &str, imap: &[&str]) -> String {
        let ca = self.pki.ca_file.display().to_string();
        let mut imap_fields = vec![
            "host: 127.0.0.1".to_owned(),
            format!("port: {}", self.imap.port()),
            "tls: implicit".to_owned(),
            format!("tls_config: {{ ca_file: {ca} }}"),
            "username: inbox@example.test".to_owned(),
            format!("password: {IMAP_PASSWORD}"),
        ];
        for field in imap {
            let key = field.split(':').next().unwrap_or("");
            imap_fields.retain(|f| !f.starts_with(&format!("{key}:")));
            imap_fields.push((*field).to_owned());
        }
        let timeout = if module.contains("timeout:") { "" } else { "timeout: 5s\n" };
        let interval = if delivery.contains("interval:") { "" } else { "  interval: 10s\n" };
        let delivery: String = delivery.lines().map(|l| format!("  {l}\n")).collect();
        format!(
            "tls: starttls_required\ntls_config: {{ ca_file: {ca} }}\n{SMTP_AUTH}\n{timeout}{module}\n\
             delivery:\n  mail_from: monitor@example.test\n  rcpt_to: inbox@example.test\n{interval}\
             {delivery}  imap: {{ {} }}",
            imap_fields.join(", ")
        )
    }

    async fn probe(&self, module: &str, delivery: &str, imap: &[&str]) -> ProbeReport {
        probe::run(&self.spec(module, delivery, imap)).await
    }

    /// The SMTP command lines of every finished connection.
    fn smtp_lines(&self) -> Vec<String> {
        self.smtp.observed().into_iter().flat_map(|o| o.lines).collect()
    }

    /// The messages the SMTP server accepted.
    fn accepted(&self) -> Vec<smtp::Message> {
        self.smtp.observed().into_iter().flat_map(|o| o.messages).collect()
    }
}

/// A hook that files every message into `folder` at once, with [`PATH_HEADERS`] on top.
fn with_path(store: &Mailstore, folder: &str) -> MessageHook {
    let (store, folder) = (store.clone(), folder.to_owned());
    Arc::new(move |message: Vec<u8>| {
        let mut delivered = PATH_HEADERS.to_vec();
        delivered.extend(message);
        store.deposit(&folder, delivered);
    })
}

/// The SMTP behaviour whose hook is `hook(store)`.
fn delivering(hook: impl FnOnce(&Mailstore) -> MessageHook) -> impl FnOnce(&Mailstore) -> smtp::Behaviour {
    |store| smtp::Behaviour { on_message: Some(hook(store)), ..smtp::Behaviour::default() }
}

/// The value of the token header in a message.
fn token_in(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or("");
    header.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case(TOKEN_HEADER).then(|| value.trim().to_owned())
    })
}

/// A message as an earlier probe (or someone else) left it.
fn leftover(token_header: Option<&str>) -> Vec<u8> {
    let token = token_header.map(|t| format!("{TOKEN_HEADER}: {t}\r\n")).unwrap_or_default();
    format!(
        "From: monitor@example.test\r\nTo: inbox@example.test\r\n{token}Subject: left over\r\n\r\nbody\r\n"
    )
    .into_bytes()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn a_message_delivered_to_the_inbox_is_found_read_for_its_path_and_deleted() {
    let rig = Rig::start(imap::Behaviour::default(), delivering(|s| with_path(s, "INBOX"))).await;
    let report = rig.probe("", "", &[]).await;
    assert!(report.success(), "{:?}", report.failure);
    use Phase::*;
    assert_eq!(
        phases(&report),
        vec![
            Resolve,
            Connect,
            Banner,
            Ehlo,
            Starttls,
            TlsHandshake,
            EhloTls,
            Auth,
            ImapConnect,
            ImapLogin,
            Submit,
            Quit,
            Deliver,
            Fetch,
            Cleanup
        ]
    );
    let delivery = report.delivery.as_ref().expect("a delivery outcome");
    let accepted = rig.accepted();
    assert_eq!(accepted.len(), 1, "one message submitted");
    assert_eq!(delivery.queue_id.as_deref(), Some(accepted[0].queue_id.as_str()), "the 250's queue id");
    assert_eq!(token_in(&accepted[0].data).as_deref(), Some(delivery.token.as_str()), "the token submitted");
    assert_eq!(delivery.folder, Some(Folder::Inbox));
    assert_eq!(
        delivery.path,
        Some(PathInfo { dkim_pass: true, spf_pass: true, dmarc_pass: false, received_hops: 2 }),
        "read from the header the MX put on top"
    );
    assert_eq!(delivery.swept, Some(0));
    assert!(rig.store.messages("INBOX").is_empty(), "{:?}", rig.store.messages("INBOX"));

    let seen = rig.imap.wait_for_connections(1).await;
    assert_eq!(seen[0].failure, None);
    assert_eq!(seen[0].lines.last().map(String::as_str).map(|l| l.ends_with(" LOGOUT")), Some(true));
    // The message was read without \Seen, and only its UID was flagged and expunged.
    let lines = rig.imap.lines();
    let commands: Vec<&str> = lines.iter().map(|l| l.split_once(' ').map_or("", |(_, c)| c)).collect();
    assert!(commands.contains(&"UID FETCH 1 (UID BODY.PEEK[HEADER])"), "{commands:?}");
    assert!(commands.contains(&r"UID STORE 1 +FLAGS.SILENT (\Deleted)"), "{commands:?}");
    assert!(commands.contains(&"UID EXPUNGE 1"), "{commands:?}");
    assert!(!commands.iter().any(|c| c.contains("BODY[")), "a FETCH that sets \\Seen: {commands:?}");
    // The mailbox password went to the IMAP server's LOGIN and nowhere else.
    let with_password: Vec<&String> = lines.iter().filter(|l| l.contains(IMAP_PASSWORD)).collect();
    assert!(with_password.len() == 1 && with_password[0].contains(" LOGIN "), "{with_password:?}");
    assert!(rig.smtp_lines().iter().all(|l| !l.contains(IMAP_PASSWORD)));
    assert!(accepted.iter().all(|m| !String::from_utf8_lossy(&m.data).contains(IMAP_PASSWORD)));
}

#[tokio::test]
async fn a_message_filed_into_junk_is_delivered_to_junk_and_still_deleted() {
    let rig =
        Rig::start(imap::Behaviour::default(), delivering(|s| s.deliver_to("Junk", Duration::ZERO))).await;
    let report = rig.probe("", "require_inbox: true", &[]).await;
    assert_failed(&report, Phase::Deliver, Reason::DeliveredToJunk);
    // Found, read and cleaned up before the verdict.
    assert!(
        phases(&report).ends_with(&[Phase::Deliver, Phase::Fetch, Phase::Cleanup]),
        "{:?}",
        phases(&report)
    );
    let delivery = report.delivery.as_ref().unwrap();
    assert_eq!((delivery.folder, delivery.swept), (Some(Folder::Junk), Some(0)));
    assert!(rig.store.messages("Junk").is_empty(), "{:?}", rig.store.messages("Junk"));
}

#[tokio::test]
async fn a_message_in_junk_passes_when_the_inbox_is_not_required() {
    let rig =
        Rig::start(imap::Behaviour::default(), delivering(|s| s.deliver_to("Junk", Duration::ZERO))).await;
    let report = rig.probe("", "require_inbox: false", &[]).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.delivery.as_ref().unwrap().folder, Some(Folder::Junk));
    assert!(rig.store.messages("Junk").is_empty(), "{:?}", rig.store.messages("Junk"));
}

#[tokio::test]
async fn the_junk_folder_is_the_one_marked_junk_whatever_its_name_or_the_configured_one() {
    let marked = imap::Behaviour { junk_folder: Some("Junk E-mail".into()), ..imap::Behaviour::default() };
    let unmarked = imap::Behaviour {
        junk_folder: None,
        other_folders: vec!["Spam".into()],
        ..imap::Behaviour::default()
    };
    for (imap, folder, configured) in [
        (marked, "Junk E-mail", None),
        (unmarked.clone(), "Spam", Some("junk_mailbox: Spam")),
        (unmarked, "Spam", None),
    ] {
        let rig = Rig::start(imap, delivering(|s| s.deliver_to(folder, Duration::ZERO))).await;
        let report = rig.probe("", "", &configured.into_iter().collect::<Vec<_>>()).await;
        let delivery = report.delivery.as_ref().unwrap();
        if configured.is_none() && folder == "Spam" {
            assert!(report.success(), "neither marked nor configured: another folder; {:?}", report.failure);
            assert_eq!(delivery.folder, Some(Folder::Other));
        } else {
            assert_failed(&report, Phase::Deliver, Reason::DeliveredToJunk);
            assert_eq!(delivery.folder, Some(Folder::Junk), "{folder}");
            assert!(report.failure.as_ref().unwrap().detail.contains(folder));
        }
        assert!(rig.store.messages(folder).is_empty(), "{folder}: {:?}", rig.store.messages(folder));
    }
}

#[tokio::test]
async fn a_message_filed_into_another_folder_is_found_there_as_other() {
    let imap = imap::Behaviour { other_folders: vec!["Archive".into()], ..imap::Behaviour::default() };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("Archive", Duration::ZERO))).await;
    let report = rig.probe("", "", &[]).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.delivery.as_ref().unwrap().folder, Some(Folder::Other));
    assert!(rig.store.messages("Archive").is_empty(), "{:?}", rig.store.messages("Archive"));
}

#[tokio::test]
async fn a_dropped_message_is_not_delivered_within_the_module_timeout() {
    // No hook: the server says 250 and the message goes nowhere.
    let rig = Rig::start(imap::Behaviour::default(), |_| smtp::Behaviour::default()).await;
    let report = rig.probe("timeout: 2s", "poll_interval: 500ms", &[]).await;
    assert_failed(&report, Phase::Deliver, Reason::NotDelivered);
    assert_eq!(phases(&report).last(), Some(&Phase::Deliver));
    assert_eq!(rig.accepted().len(), 1, "the message was accepted");
    assert!(report.delivery.as_ref().unwrap().queue_id.is_some());
    // The probe's deadline ends the wait: not before it, and not long after.
    assert!(
        report.duration >= Duration::from_secs(2) && report.duration < Duration::from_millis(2800),
        "{:?}",
        report.duration
    );
}

#[tokio::test]
async fn a_wrong_imap_password_is_imap_auth_failed_before_any_mail_is_submitted() {
    let rig =
        Rig::start(imap::Behaviour::default(), delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let report = rig.probe("", "", &["password: not the imap secret"]).await;
    assert_failed(&report, Phase::ImapLogin, Reason::ImapAuthFailed);
    assert!(!report.failure.as_ref().unwrap().detail.contains("not the imap secret"));
    assert_eq!(phases(&report).last(), Some(&Phase::ImapLogin));
    assert!(report.delivery.is_none());
    let seen = rig.smtp.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().all(|l| !l.starts_with("MAIL") && l != "DATA"), "{:?}", seen[0].lines);
    assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"), "the SMTP session is closed politely");
    assert!(rig.store.messages("INBOX").is_empty());
}

#[tokio::test]
async fn a_login_refused_for_too_many_connections_is_imap_protocol_not_imap_auth_failed() {
    let imap = imap::Behaviour {
        replies: vec![(
            "LOGIN".into(),
            "NO [LIMIT] Maximum number of connections from user+IP exceeded".into(),
        )],
        ..imap::Behaviour::default()
    };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let report = rig.probe("", "", &[]).await;
    assert_failed(&report, Phase::ImapLogin, Reason::ImapProtocol);
    let detail = &report.failure.as_ref().unwrap().detail;
    assert!(detail.contains("[LIMIT] Maximum number of connections"), "the server's own words: {detail}");
}

#[tokio::test]
async fn an_untrusted_imap_certificate_is_imap_tls_and_the_password_is_never_sent() {
    let rig =
        Rig::start(imap::Behaviour::default(), delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let other_ca = rig.pki.other_ca_file.display().to_string();
    let report = rig.probe("", "", &[&format!("tls_config: {{ ca_file: {other_ca} }}")]).await;
    assert_failed(&report, Phase::ImapConnect, Reason::ImapTls);
    // The handshake completes (the verdict is the probe's), then the probe hangs up.
    let seen = rig.imap.wait_for_connections(1).await;
    assert!(seen[0].lines.is_empty() && !seen[0].logged_in, "{:?}", seen[0]);
    let smtp = rig.smtp.wait_for_connections(1).await;
    assert!(smtp[0].lines.iter().all(|l| !l.starts_with("MAIL")), "{:?}", smtp[0].lines);
}

#[tokio::test]
async fn a_rejected_recipient_is_submit_rejected_and_the_mailbox_is_logged_out() {
    let rig = Rig::start(imap::Behaviour::default(), |store| smtp::Behaviour {
        rcpt_replies: vec![(
            "inbox@example.test".into(),
            "550 5.1.1 <inbox@example.test>: no such user".into(),
        )],
        on_message: Some(store.deliver_to("INBOX", Duration::ZERO)),
        ..smtp::Behaviour::default()
    })
    .await;
    let report = rig.probe("", "", &[]).await;
    assert_failed(&report, Phase::Submit, Reason::SubmitRejected);
    let seen = rig.smtp.wait_for_connections(1).await;
    assert!(seen[0].lines.iter().all(|l| l != "DATA"), "{:?}", seen[0].lines);
    assert_eq!(seen[0].lines.last().map(String::as_str), Some("QUIT"), "polite QUIT after the 550");
    assert!(rig.accepted().is_empty());
    let imap = rig.imap.wait_for_connections(1).await;
    assert!(imap[0].lines.last().is_some_and(|l| l.ends_with(" LOGOUT")), "{:?}", imap[0].lines);
}

#[tokio::test]
async fn a_message_refused_at_the_end_of_data_is_submit_rejected() {
    let rig = Rig::start(imap::Behaviour::default(), |store| smtp::Behaviour {
        data_reply_override: Some("554 5.7.1 message content rejected".into()),
        on_message: Some(store.deliver_to("INBOX", Duration::ZERO)),
        ..smtp::Behaviour::default()
    })
    .await;
    let report = rig.probe("", "", &[]).await;
    assert_failed(&report, Phase::Submit, Reason::SubmitRejected);
    assert!(report.failure.as_ref().unwrap().detail.contains("554"), "{:?}", report.failure);
    assert_eq!(report.delivery.as_ref().unwrap().queue_id, None, "nothing was queued");
    assert!(rig.accepted().is_empty() && rig.store.messages("INBOX").is_empty());
}

#[tokio::test]
async fn leftovers_older_than_sweep_after_are_swept_and_nothing_else_is_touched() {
    let imap = imap::Behaviour { other_folders: vec!["Archive".into()], ..imap::Behaviour::default() };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let store = &rig.store;
    let stale = "1000000000-0123456789abcdef";
    let young = format!("{}-fedcba9876543210", unix_now() - 60);
    store.deposit("INBOX", leftover(Some(stale)));
    let young_uid = store.deposit("INBOX", leftover(Some(&young)));
    let foreign_uid = store.deposit("INBOX", leftover(Some("not-one-of-ours")));
    // Someone else's message, flagged \Deleted but not expunged: UID EXPUNGE leaves it.
    let plain_uid = store.deposit_with_flags("INBOX", leftover(None), &[r"\Deleted"]);
    // Old, but in a folder the sweep does not cover.
    store.deposit("Archive", leftover(Some(stale)));

    let report = rig.probe("", "sweep_after: 1h", &[]).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.delivery.as_ref().unwrap().swept, Some(1));
    let inbox = store.messages("INBOX");
    let uids: Vec<u32> = inbox.iter().map(|m| m.uid).collect();
    assert_eq!(uids, vec![young_uid, foreign_uid, plain_uid], "{inbox:?}");
    assert!(!inbox[0].has_flag(r"\Deleted") && !inbox[1].has_flag(r"\Deleted"), "{inbox:?}");
    assert!(inbox.iter().all(|m| !m.has_flag(r"\Seen")), "{inbox:?}");
    assert_eq!(store.messages("Archive").len(), 1);
}

/// The folder the message was found in is swept too: an old leftover there goes, whereas
/// the same leftover in a folder the message did not go to stays (the test above).
#[tokio::test]
async fn the_folder_the_message_landed_in_is_swept_too() {
    let imap = imap::Behaviour { other_folders: vec!["Archive".into()], ..imap::Behaviour::default() };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("Archive", Duration::ZERO))).await;
    rig.store.deposit("Archive", leftover(Some("1000000000-0123456789abcdef")));
    let report = rig.probe("", "sweep_after: 1h", &[]).await;
    assert!(report.success(), "{:?}", report.failure);
    let outcome = report.delivery.as_ref().unwrap();
    assert_eq!((outcome.folder, outcome.swept), (Some(Folder::Other), Some(1)));
    assert!(rig.store.messages("Archive").is_empty(), "{:?}", rig.store.messages("Archive"));
}

#[tokio::test]
async fn without_idle_the_inbox_is_polled_until_the_message_arrives() {
    let imap = imap::Behaviour { idle: false, ..imap::Behaviour::default() };
    let delay = Duration::from_millis(300);
    let rig = Rig::start(imap, delivering(move |s| s.deliver_to("INBOX", delay))).await;
    let report = rig.probe("", "poll_interval: 200ms", &[]).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.delivery.as_ref().unwrap().folder, Some(Folder::Inbox));
    assert!(report.phase(Phase::Deliver).unwrap() >= delay, "{:?}", report.phases);
    assert!(rig.imap.lines().iter().all(|l| !l.ends_with(" IDLE")), "{:?}", rig.imap.lines());
    assert!(rig.store.messages("INBOX").is_empty());
}

#[tokio::test]
async fn without_uidplus_nothing_is_expunged_and_cleanup_fails_as_imap_protocol() {
    let imap = imap::Behaviour { uidplus: false, ..imap::Behaviour::default() };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let report = rig.probe("", "", &[]).await;
    assert_failed(&report, Phase::Cleanup, Reason::ImapProtocol);
    assert_eq!(report.delivery.as_ref().unwrap().folder, Some(Folder::Inbox));
    let inbox = rig.store.messages("INBOX");
    assert_eq!(inbox.len(), 1, "the message stays");
    assert!(inbox[0].flags.is_empty(), "neither flagged \\Deleted nor seen: {:?}", inbox[0].flags);
    let lines = rig.imap.lines();
    assert!(lines.iter().all(|l| !l.contains("STORE") && !l.contains("EXPUNGE")), "{lines:?}");
}

#[tokio::test]
async fn a_refused_delete_fails_cleanup_as_imap_protocol() {
    // A mailbox shared without the right to delete: the flag is refused, so nothing goes.
    let imap = imap::Behaviour {
        replies: vec![("UID STORE".into(), "NO [NOPERM] Permission denied".into())],
        ..imap::Behaviour::default()
    };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let report = rig.probe("", "", &[]).await;
    assert_failed(&report, Phase::Cleanup, Reason::ImapProtocol);
    let detail = &report.failure.as_ref().unwrap().detail;
    assert_eq!(detail, "UID STORE: NO [NOPERM] Permission denied", "the server's own words");
    assert_eq!(rig.store.messages("INBOX").len(), 1, "the message stays");
}

/// A refused search is the server's fault, said at once: not a silent empty result that
/// waits out the deadline as `not_delivered` (async-imap's own `uid_search` would).
#[tokio::test]
async fn a_refused_search_is_imap_protocol_at_once_not_a_wait() {
    let imap = imap::Behaviour {
        replies: vec![("UID SEARCH".into(), "NO [SERVERBUG] search failed".into())],
        ..imap::Behaviour::default()
    };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let report = rig.probe("", "", &[]).await;
    assert_failed(&report, Phase::Deliver, Reason::ImapProtocol);
    let failure = report.failure.as_ref().unwrap();
    assert!(failure.detail.contains("UID SEARCH") && failure.detail.contains("search failed"), "{failure:?}");
    assert!(report.phase(Phase::Deliver).unwrap() < Duration::from_secs(1), "it did not wait: {report:?}");
}

#[tokio::test]
async fn a_delayed_delivery_is_timed_in_deliver_and_idle_wakes_the_wait() {
    let delay = Duration::from_millis(300);
    let rig = Rig::start(imap::Behaviour::default(), delivering(move |s| s.deliver_to("INBOX", delay))).await;
    // Polling alone would look again only after 2 s.
    let report = rig.probe("", "poll_interval: 2s", &[]).await;
    assert!(report.success(), "{:?}", report.failure);
    let deliver = report.phase(Phase::Deliver).unwrap();
    assert!(deliver >= delay && deliver < Duration::from_millis(1500), "deliver took {deliver:?}");
    let lines = rig.imap.lines();
    assert!(lines.iter().any(|l| l.ends_with(" IDLE")) && lines.iter().any(|l| l == "DONE"), "{lines:?}");
}

#[tokio::test]
async fn imap_over_starttls_reads_the_message_back_like_implicit_tls() {
    let imap = imap::Behaviour { tls: imap::Tls::Starttls, ..imap::Behaviour::default() };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let report = rig.probe("", "", &["tls: starttls"]).await;
    assert!(report.success(), "{:?}", report.failure);
    assert_eq!(report.delivery.as_ref().unwrap().folder, Some(Folder::Inbox));
    let seen = rig.imap.wait_for_connections(1).await;
    assert!(seen[0].tls_established && seen[0].logged_in);
    assert!(rig.store.messages("INBOX").is_empty());
}

/// `check HOST --deliver ADDRESS` runs the same probe from the command line: delivered into
/// the inbox (a success, every hop and the verdicts in the text, the message gone), and a
/// dropped message is a failure naming `not_delivered`, within `--timeout`; the JSON form
/// says the same.
#[tokio::test]
async fn check_deliver_reports_the_hops_and_fails_when_nothing_arrives() {
    let dir = std::env::temp_dir().join(format!("smtp-exporter-check-deliver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (smtp_pw, imap_pw) = (dir.join("smtp"), dir.join("imap"));
    std::fs::write(&smtp_pw, "correct horse\n").unwrap();
    std::fs::write(&imap_pw, format!("{IMAP_PASSWORD}\n")).unwrap();
    // Mail to dropped@ is lost on the way; the rest lands in INBOX.
    let rig = Rig::start(imap::Behaviour::default(), |store| {
        let inbox = with_path(store, "INBOX");
        let hook: MessageHook = Arc::new(move |message: Vec<u8>| {
            if !String::from_utf8_lossy(&message).contains("To: <dropped@example.test>") {
                inbox(message);
            }
        });
        smtp::Behaviour { on_message: Some(hook), ..smtp::Behaviour::default() }
    })
    .await;
    /// The check subcommand's arguments, parsed as the binary parses them.
    #[derive(clap::Parser)]
    struct CheckCommand {
        #[command(flatten)]
        args: smtp_exporter::check::CheckArgs,
    }
    let args = |to: &str, json: bool| {
        let argv = [
            "check",
            "127.0.0.1",
            "--port",
            &format!("{}:starttls_required", rig.smtp.port()),
            "--user",
            "probe@example.test",
            "--password-file",
            &smtp_pw.display().to_string(),
            "--ca-file",
            &rig.pki.ca_file.display().to_string(),
            "--deliver",
            to,
            "--mail-from",
            "monitor@example.test",
            "--imap-port",
            &rig.imap.port().to_string(),
            "--imap-user",
            "inbox@example.test",
            "--imap-password-file",
            &imap_pw.display().to_string(),
            "--timeout",
            "2s",
        ]
        .map(str::to_owned);
        let mut argv = argv.to_vec();
        if json {
            argv.push("--json".into());
        }
        argv
    };
    let run = |argv: Vec<String>| async move {
        use clap::Parser as _;
        let command = CheckCommand::try_parse_from(argv).unwrap();
        smtp_exporter::check::run(&command.args).await.unwrap()
    };
    let ok = run(args("inbox@example.test", false)).await;
    assert!(ok.any_success, "{}", ok.text);
    for wanted in [
        "Delivery to inbox@example.test through 127.0.0.1:",
        "into the inbox folder; the message was deleted",
        "hops: imap_connect ",
        "queue id: FAKE",
        "Authentication-Results: dkim pass, spf pass, dmarc not pass; 2 Received hops",
    ] {
        assert!(ok.text.contains(wanted), "{wanted:?} missing from:\n{}", ok.text);
    }
    assert!(!ok.text.contains(IMAP_PASSWORD));
    // Each hop in milliseconds with two decimals: "imap_connect 1.23 ms".
    let hop =
        ok.text.split("hops: imap_connect ").nth(1).and_then(|rest| rest.split(" ms").next()).unwrap_or("");
    assert!(
        hop.parse::<f64>().is_ok() && hop.split_once('.').is_some_and(|(_, d)| d.len() == 2),
        "{hop:?} in:\n{}",
        ok.text
    );
    assert!(rig.store.messages("INBOX").is_empty(), "the message was deleted");
    let dropped = run(args("dropped@example.test", true)).await;
    assert!(!dropped.any_success, "{}", dropped.text);
    let json: serde_json::Value = serde_json::from_str(&dropped.text).unwrap();
    assert_eq!(json["delivered"], false);
    assert_eq!((json["phase"].as_str(), json["reason"].as_str()), (Some("deliver"), Some("not_delivered")));
    assert!(json["detail"].as_str().unwrap().contains("queue id FAKE"), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The exporter writes what a delivery probe and an envelope check found: the folder, the
/// verdicts and hops, the sweep, the delivery phases, and each envelope reply code.
#[tokio::test]
async fn the_exporter_exposes_delivery_and_envelope_results() {
    let rig = Rig::start(imap::Behaviour::default(), |store| smtp::Behaviour {
        on_message: Some(with_path(store, "INBOX")),
        rcpt_replies: vec![("relay@foreign.example".into(), "554 5.7.1 Relay access denied".into())],
        ..smtp::Behaviour::default()
    })
    .await;
    let indent = |yaml: String| yaml.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let yaml = format!(
        "modules:\n  d:\n{}  e:\n    tls: none\n    envelope: {{ accept: [postmaster@example.test], reject: [relay@foreign.example] }}\n\
         targets:\n  - name: fake\n    host: 127.0.0.1\n    ports: [{{ port: {p}, module: d }}, {{ port: {p}, module: e }}]\n",
        indent(rig.module_yaml("", "", &[])),
        p = rig.smtp.port()
    );
    let exporter = crate::support::InProcess::start(yaml, "delivery.yml").await;
    let samples = exporter
        .scrape_until(Duration::from_secs(10), "both probes", |s| {
            ["d", "e"]
                .iter()
                .all(|m| !testkit::exposition::find(s, "smtp_probe_success", &[("module", m)]).is_empty())
        })
        .await;
    let value = |name: &str, labels: &[(&str, &str)]| testkit::exposition::value(&samples, name, labels);
    assert_eq!(value("smtp_probe_success", &[("module", "d")]), 1.0);
    assert_eq!(value("smtp_delivery_folder_info", &[("module", "d"), ("folder", "inbox")]), 1.0);
    for (method, pass) in [("dkim", 1.0), ("spf", 1.0), ("dmarc", 0.0)] {
        assert_eq!(value("smtp_delivery_authentication_pass", &[("method", method)]), pass, "{method}");
    }
    assert_eq!(value("smtp_delivery_received_hops", &[("module", "d")]), 2.0);
    assert_eq!(value("smtp_delivery_swept_messages", &[("module", "d")]), 0.0);
    assert_eq!(value("smtp_delivery_skipped_folders", &[("module", "d")]), 0.0);
    for phase in ["imap_connect", "imap_login", "submit", "deliver", "fetch", "cleanup"] {
        assert!(
            value("smtp_probe_phase_duration_seconds", &[("module", "d"), ("phase", phase)]) > 0.0,
            "{phase}"
        );
    }
    assert_eq!(value("smtp_probe_success", &[("module", "e")]), 1.0);
    assert_eq!(value("smtp_envelope_mail_from_reply_code", &[("module", "e")]), 250.0);
    let rcpt = |recipient: &str, expect: &str| {
        value(
            "smtp_envelope_rcpt_reply_code",
            &[("module", "e"), ("recipient", recipient), ("expect", expect)],
        )
    };
    assert_eq!(rcpt("postmaster@example.test", "accept"), 250.0);
    assert_eq!(rcpt("relay@foreign.example", "reject"), 554.0);
    exporter.stop().await;
}

/// Each way an IMAP server can fail is named for what it is, with the server's words: a
/// greeting that is not `* OK`, a BAD to SELECT, a connection closed in the middle, a line
/// past the 64 KiB line bound, and answers past the 1 MiB read bound.
#[tokio::test]
async fn imap_failures_are_classified_with_the_servers_words() {
    let cases: Vec<(imap::Behaviour, Phase, Reason, &str)> = vec![
        (
            imap::Behaviour { greeting: "* BYE too busy".into(), ..imap::Behaviour::default() },
            Phase::ImapConnect,
            Reason::ImapProtocol,
            "IMAP greeting: not * OK",
        ),
        (
            imap::Behaviour {
                replies: vec![("SELECT".into(), "BAD [CLIENTBUG] try again".into())],
                ..imap::Behaviour::default()
            },
            Phase::ImapLogin,
            Reason::ImapProtocol,
            "SELECT INBOX: BAD [CLIENTBUG] try again",
        ),
        (
            imap::Behaviour {
                replies: vec![("SELECT".into(), imap::CLOSE.into())],
                ..imap::Behaviour::default()
            },
            Phase::ImapLogin,
            Reason::Closed,
            "SELECT INBOX: ",
        ),
        (
            imap::Behaviour {
                replies: vec![("SELECT".into(), imap::CLOSE_MIDWAY.into())],
                ..imap::Behaviour::default()
            },
            Phase::ImapLogin,
            Reason::Closed,
            "SELECT INBOX: the IMAP server closed the connection",
        ),
        (
            imap::Behaviour {
                replies: vec![("SELECT".into(), format!("OK {}", "x".repeat(2 << 20)))],
                ..imap::Behaviour::default()
            },
            Phase::ImapLogin,
            Reason::ImapProtocol,
            "SELECT INBOX: the IMAP server sent a line longer than 64 KiB",
        ),
        (
            imap::Behaviour {
                raw: vec![("SELECT".into(), {
                    let mut lines = b"* OK a short line that comes again and again\r\n".repeat(50_000);
                    lines.extend(b"{tag} OK done\r\n");
                    lines
                })],
                ..imap::Behaviour::default()
            },
            Phase::ImapLogin,
            Reason::ImapProtocol,
            "SELECT INBOX: the IMAP server sent more than 1 MiB in one probe",
        ),
    ];
    for (behaviour, phase, reason, detail) in cases {
        let rig = Rig::start(behaviour, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
        // Generous deadlines: parsing a 1 MiB answer costs a debug build seconds of CPU on a
        // loaded machine (a mutation run), and a timeout would hide the classification.
        let report = rig.probe("timeout: 60s\nphase_timeout: 60s", "interval: 60s", &[]).await;
        assert_failed(&report, phase, reason);
        let got = &report.failure.as_ref().unwrap().detail;
        assert!(got.starts_with(detail), "{got:?} does not start with {detail:?}");
        assert!(rig.accepted().is_empty(), "nothing is submitted when the mailbox cannot be read");
    }
}

/// Over STARTTLS, the plain-text greeting is read with a line bound: a greeting longer
/// than 4 KiB is refused before STARTTLS is even sent.
#[tokio::test]
async fn an_endless_plain_greeting_is_refused_before_starttls() {
    let imap = imap::Behaviour {
        tls: imap::Tls::Starttls,
        greeting: format!("* OK {}", "x".repeat(5000)),
        ..imap::Behaviour::default()
    };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::ZERO))).await;
    let report = rig.probe("", "", &["tls: starttls"]).await;
    assert_failed(&report, Phase::ImapConnect, Reason::ImapProtocol);
    assert_eq!(report.failure.as_ref().unwrap().detail, "an IMAP line too long");
    assert!(rig.imap.lines().is_empty(), "no command was sent: {:?}", rig.imap.lines());
}

/// The transcript of a delivery probe tells what the mailbox offers, and the message's
/// path through it; INBOX is searched as itself, never EXAMINEd as one of the others.
#[tokio::test]
async fn the_transcript_describes_the_mailbox_and_inbox_is_not_an_other_folder() {
    let imap = imap::Behaviour {
        other_folders: vec!["Archive".into(), "Shared".into()],
        ..imap::Behaviour::default()
    };
    let delay = Duration::from_millis(200);
    let rig = Rig::start(imap, delivering(move |s| s.deliver_to("INBOX", delay))).await;
    // A folder that only holds others, which cannot be selected.
    rig.store.mark("Shared", r"\Noselect");
    let report = probe::run_recorded(&rig.spec("", "poll_interval: 300ms", &[])).await;
    assert!(report.success(), "{:?}", report.failure);
    let mut transcript = String::new();
    report.transcript.as_ref().expect("a transcript").render(&mut transcript);
    for wanted in [
        "IMAP logged in; IDLE offered; junk folder Junk; 1 other folders",
        "search named UID [",
        "] in INBOX (inbox)",
        "(the message, ",
    ] {
        assert!(transcript.contains(wanted), "{wanted:?} missing from:\n{transcript}");
    }
    let lines = rig.imap.lines();
    assert!(lines.iter().any(|l| l.contains("EXAMINE \"Archive\"")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("EXAMINE \"INBOX\"") || l.contains("\"Shared\"")), "{lines:?}");
    assert!(!transcript.contains(IMAP_PASSWORD));
}

/// A connection closed while the probe waits in IDLE is `closed`, in `deliver`, at once.
#[tokio::test]
async fn a_connection_closed_during_idle_is_closed_in_deliver() {
    let imap =
        imap::Behaviour { replies: vec![("IDLE".into(), imap::CLOSE.into())], ..imap::Behaviour::default() };
    let rig = Rig::start(imap, delivering(|s| s.deliver_to("INBOX", Duration::from_secs(3)))).await;
    let report = rig.probe("", "poll_interval: 2s", &[]).await;
    assert_failed(&report, Phase::Deliver, Reason::Closed);
    assert!(report.failure.as_ref().unwrap().detail.starts_with("IDLE: "), "{:?}", report.failure);
    assert!(report.phase(Phase::Deliver).unwrap() < Duration::from_secs(1), "{:?}", report.phases);
}

/// A 4xx to the submission is `reply_4xx` (try again later), not `submit_rejected`.
#[tokio::test]
async fn a_deferred_recipient_is_reply_4xx_not_submit_rejected() {
    let rig = Rig::start(imap::Behaviour::default(), |store| smtp::Behaviour {
        on_message: Some(with_path(store, "INBOX")),
        rcpt_replies: vec![("inbox@example.test".into(), "451 4.3.0 try again later".into())],
        ..smtp::Behaviour::default()
    })
    .await;
    let report = rig.probe("", "", &[]).await;
    assert_failed(&report, Phase::Submit, Reason::Reply4xx);
    assert_eq!(
        report.failure.as_ref().unwrap().detail,
        "RCPT TO:<inbox@example.test>: 451 4.3.0 try again later"
    );
}

/// The server's NO or BAD to IDLE, and to the header's FETCH, are `imap_protocol` in their
/// phase, with the server's words.
#[tokio::test]
async fn refusals_of_idle_and_fetch_are_imap_protocol_with_the_servers_words() {
    let cases = [
        ("IDLE", "NO [CANNOT] no idling here", Phase::Deliver, "IDLE: NO [CANNOT] no idling here"),
        ("IDLE", "BAD [CLIENTBUG] idle what", Phase::Deliver, "IDLE: BAD [CLIENTBUG] idle what"),
        (
            "UID FETCH",
            "NO [SERVERBUG] cannot read it",
            Phase::Fetch,
            "UID FETCH: NO [SERVERBUG] cannot read it",
        ),
    ];
    for (command, reply, phase, detail) in cases {
        let imap =
            imap::Behaviour { replies: vec![(command.into(), reply.into())], ..imap::Behaviour::default() };
        // Delivered late for the IDLE cases, so that the probe waits; at once for FETCH.
        let delay = if command == "IDLE" { Duration::from_secs(3) } else { Duration::ZERO };
        let rig = Rig::start(imap, delivering(move |s| s.deliver_to("INBOX", delay))).await;
        let report = rig.probe("", "poll_interval: 2s", &[]).await;
        assert_failed(&report, phase, Reason::ImapProtocol);
        assert_eq!(report.failure.as_ref().unwrap().detail, detail);
    }
}

/// Issue 26: a delivery probe in flight when the exporter stops (SIGTERM) is given its
/// grace to find and delete its message: the mailbox is empty after the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_delivery_leaves_the_mailbox_empty() {
    let delay = Duration::from_millis(1500);
    let rig = Rig::start(imap::Behaviour::default(), delivering(move |s| s.deliver_to("INBOX", delay))).await;
    let indent = |yaml: String| yaml.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let yaml = format!(
        "modules:\n  d:\n{}targets:\n  - name: fake\n    host: 127.0.0.1\n    ports: [{{ port: {}, module: d }}]\n",
        indent(rig.module_yaml("", "poll_interval: 500ms", &[])),
        rig.smtp.port()
    );
    let exporter = crate::support::InProcess::start(yaml, "delivery-stop.yml").await;
    // Stop once the message is submitted and the probe waits for it.
    let submitted = std::time::Instant::now();
    while rig.accepted().is_empty() && submitted.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rig.accepted().len(), 1, "the probe submitted its message");
    assert!(rig.store.messages("INBOX").is_empty(), "not delivered yet when the stop comes");
    exporter.stop().await;
    assert!(rig.store.messages("INBOX").is_empty(), "the probe deleted its message before it stopped");
    let lines = rig.imap.lines();
    assert!(lines.iter().any(|l| l.contains("UID EXPUNGE")), "{lines:?}");
}
