//! The walk: one probe's phases in order, each under its own deadline, from resolving the
//! name to QUIT (and, for a delivery probe, reading the message back over IMAP).
//!
//! Called by [`run`] (the scheduler, `/probe`, `check`); it fills a [`ProbeReport`] and
//! ends with the first phase that fails, after a polite QUIT when the conversation allows
//! it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::session::Session;
use super::{
    auth, delivery, envelope, expect, quickack, secrets, submit, transcript, truncate, Capabilities, Failure,
    Phase, ProbeReport, Reason, StepError, Stream, TlsInfo,
};
use crate::config::{ProbeSpec, Tls, Transport};
use crate::tls;

/// How long the courtesy QUIT after a failure may take; it is not part of the measurement.
const COURTESY_QUIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs one probe. Never panics on server input and always returns within the module's
/// timeout (plus at most [`COURTESY_QUIT_TIMEOUT`] for a polite QUIT after a failure).
pub async fn run(spec: &ProbeSpec) -> ProbeReport {
    run_walk(Walk::new(spec, false)).await
}

/// Runs one probe and keeps its transcript in the report (see `transcript`).
pub async fn run_recorded(spec: &ProbeSpec) -> ProbeReport {
    run_walk(Walk::new(spec, true)).await
}

async fn run_walk(mut walk: Walk<'_>) -> ProbeReport {
    let result = walk.resolve_and_connect().await;
    let outcome = match result {
        Ok(stream) => walk.converse(stream).await,
        Err(failure) => Err(failure),
    };
    // The delivery steps are boxed, so that the probe future of every other module stays
    // as small as it was.
    let outcome = match outcome {
        Ok(()) if walk.spec.module.delivery.is_some() => Box::pin(walk.read_back()).await,
        other => other,
    };
    walk.finish(outcome).await
}

/// Runs the SMTP part of a probe on an already connected stream (tests use an in-memory
/// pipe). The report has no `resolve` or `connect` phase.
pub async fn run_on_stream(spec: &ProbeSpec, stream: Box<dyn Stream>) -> ProbeReport {
    let mut walk = Walk::new(spec, false);
    let outcome = walk.converse(stream).await;
    walk.finish(outcome).await
}

/// The state of one probe in progress.
struct Walk<'a> {
    spec: &'a ProbeSpec,
    report: ProbeReport,
    start: Instant,
    clock: Deadlines,
    /// The session, kept here so that `finish` can send a courtesy QUIT after a failure.
    session: Option<Session<Box<dyn Stream>>>,
    /// The transcript, when the probe keeps one.
    recorder: Option<transcript::Recorder>,
    /// A delivery probe's mailbox, from `imap_login` until the walk ends.
    mailbox: Option<Box<delivery::imap::Mailbox>>,
    /// When the submitted message was accepted (the 250 after DATA).
    submitted: Option<Instant>,
    /// What no output of the probe may show.
    secrets: secrets::Secrets,
}

impl<'a> Walk<'a> {
    fn new(spec: &'a ProbeSpec, recorded: bool) -> Walk<'a> {
        let start = Instant::now();
        let secrets = secrets_of(spec);
        Walk {
            spec,
            report: ProbeReport::new(),
            start,
            clock: Deadlines { probe: start + spec.module.timeout, phase: spec.module.phase_timeout },
            session: None,
            recorder: recorded.then(|| transcript::Transcript::recorder(start, secrets.clone())),
            mailbox: None,
            submitted: None,
            secrets,
        }
    }

    /// A note in the transcript; `text` is only built when there is one.
    fn note(&self, text: impl FnOnce() -> String) {
        if self.recorder.is_some() {
            transcript::note(&self.recorder, transcript::Dir::Note, &text());
        }
    }

    async fn resolve_and_connect(&mut self) -> Result<Box<dyn Stream>, Failure> {
        // A spec made from DNS has its address; its lookups are timed by the domain walk.
        let addr = match &self.spec.via {
            Some(via) => SocketAddr::new(via.address, self.spec.port),
            None => self.clock.time(&mut self.report.phases, Phase::Resolve, resolve(self.spec)).await?,
        };
        self.report.peer = Some(addr);
        self.note(|| format!("connect to {addr} ({}:{})", self.spec.host, self.spec.port));
        let tcp = self
            .clock
            .time(&mut self.report.phases, Phase::Connect, async {
                TcpStream::connect(addr).await.map_err(|e| {
                    StepError::new(connect_reason(&e, || crate::sys::no_local_route(addr)), e.to_string())
                })
            })
            .await?;
        self.note(|| "connected".to_owned());
        // Commands are single small writes answered by the server: no reason to batch.
        let _ = tcp.set_nodelay(true);
        Ok(Box::new(quickack::QuickAck::new(tcp)))
    }

    /// The open session and what a step needs beside it. Steps run only after
    /// `start_session`, which opens it.
    fn parts(&mut self) -> (&mut Session<Box<dyn Stream>>, &mut ProbeReport, Deadlines) {
        (self.session.as_mut().expect("a step runs on an open session"), &mut self.report, self.clock)
    }

    /// Opens the session on `stream`: through the TLS handshake first with implicit TLS.
    /// A certificate failure the module fails on is returned after the session is open,
    /// so that QUIT can still be said inside TLS.
    async fn start_session(&mut self, stream: Box<dyn Stream>) -> Result<(), Failure> {
        match &self.spec.transport {
            Transport::Implicit { tls } => self.tls_upgrade(tls, stream).await,
            _ => {
                self.session = Some(Session::recorded(stream, self.recorder.clone(), self.secrets.clone()));
                Ok(())
            }
        }
    }

    /// Runs the TLS handshake on `stream` and opens the session on the encrypted stream.
    /// Fails after opening it when the certificate is invalid and the module fails on that.
    async fn tls_upgrade(
        &mut self,
        tls: &Tls<ServerName<'static>>,
        stream: Box<dyn Stream>,
    ) -> Result<(), Failure> {
        let (stream, info) = self
            .clock
            .time(
                &mut self.report.phases,
                Phase::TlsHandshake,
                tls::handshake(&tls.settings, tls.name.clone(), self.spec.tlsa.as_deref(), stream),
            )
            .await?;
        self.session = Some(Session::recorded(Box::new(stream), self.recorder.clone(), self.secrets.clone()));
        self.note(|| describe_tls(&info));
        let cert_failure = match (info.cert_error, tls.settings.fail_on_invalid_cert) {
            (Some(error), true) => Some(Failure {
                phase: Phase::TlsHandshake,
                reason: Reason::TlsCertInvalid,
                detail: format!(
                    "certificate {}: {}; {}",
                    error.as_str(),
                    info.cert_error_detail.as_deref().unwrap_or("verification failed"),
                    error.remedy()
                ),
            }),
            _ => None,
        };
        self.report.tls = Some(info);
        cert_failure.map_or(Ok(()), Err)
    }

    /// Everything after connect: the session's steps in order.
    async fn converse(&mut self, stream: Box<dyn Stream>) -> Result<(), Failure> {
        self.start_session(stream).await?;
        self.banner().await?;
        let caps = self.ehlo(Phase::Ehlo).await?;
        let (caps, encrypted) = match &self.spec.transport {
            Transport::Plain => (caps, false),
            Transport::Implicit { .. } => (caps, true),
            Transport::Starttls { required, tls } => self.starttls(*required, tls, caps).await?,
        };
        self.authenticate(&caps, encrypted).await?;
        self.envelope().await?;
        if self.spec.module.delivery.is_some() {
            Box::pin(self.submit()).await?;
        }
        self.quit().await
    }

    /// Reads the greeting; anything but 220 fails the probe.
    async fn banner(&mut self) -> Result<(), Failure> {
        let (session, report, clock) = self.parts();
        let banner =
            clock.time(&mut report.phases, Phase::Banner, async { Ok(session.read_reply().await?) }).await?;
        report.banner_code = Some(banner.code);
        report.banner_hostname = banner.lines.first().and_then(|l| l.split_whitespace().next()).map(truncate);
        if banner.code != 220 {
            return Err(banner.unexpected("greeting").at(Phase::Banner));
        }
        Ok(())
    }

    /// EHLO (or HELO) as `phase`; the capabilities go to the report for the session it
    /// ran in: inside TLS for `ehlo_tls` and with implicit TLS, else before TLS.
    async fn ehlo(&mut self, phase: Phase) -> Result<Capabilities, Failure> {
        let inside_tls = phase == Phase::EhloTls || matches!(self.spec.transport, Transport::Implicit { .. });
        let hostname = self.spec.module.ehlo_hostname.as_str();
        let session = self.session.as_mut().expect("a step runs on an open session");
        let (caps, helo) = self.clock.time(&mut self.report.phases, phase, greet(session, hostname)).await?;
        self.report.helo_fallback |= helo;
        if inside_tls {
            self.report.ehlo_tls = Some(caps.clone());
        } else {
            self.report.ehlo = Some(caps.clone());
        }
        Ok(caps)
    }

    /// STARTTLS when advertised, then the handshake and EHLO again inside TLS. Returns the
    /// capabilities to go on with and whether the session is now encrypted; a `required`
    /// STARTTLS that is not advertised fails the probe.
    async fn starttls(
        &mut self,
        required: bool,
        tls: &Tls<ServerName<'static>>,
        caps: Capabilities,
    ) -> Result<(Capabilities, bool), Failure> {
        if !caps.starttls() {
            if required {
                let err = StepError::new(
                    Reason::StarttlsUnavailable,
                    "STARTTLS is not advertised in the EHLO reply",
                );
                return Err(err.at(Phase::Starttls));
            }
            return Ok((caps, false));
        }
        let (session, report, clock) = self.parts();
        clock
            .time(&mut report.phases, Phase::Starttls, async {
                session.expect("STARTTLS", "STARTTLS", 220).await?;
                if session.has_pending_bytes() {
                    return Err(StepError::new(
                        Reason::StarttlsInjection,
                        format!("bytes after the 220 to STARTTLS: {:?}", session.pending_excerpt()),
                    ));
                }
                Ok(())
            })
            .await?;
        let plain = self.session.take().expect("a step runs on an open session");
        self.report.bare_lf_lines += plain.bare_lf_lines;
        self.tls_upgrade(tls, plain.into_stream()).await?;
        Ok((self.ehlo(Phase::EhloTls).await?, true))
    }

    /// AUTH with the module's credentials, never on an unencrypted session unless the
    /// module allows it.
    async fn authenticate(&mut self, caps: &Capabilities, encrypted: bool) -> Result<(), Failure> {
        let Some(auth) = &self.spec.module.auth else { return Ok(()) };
        let (session, report, clock) = self.parts();
        report.auth_success = Some(false);
        if !encrypted && !auth.allow_plaintext {
            let err = StepError::new(
                Reason::AuthPlaintextRefused,
                "the session is not encrypted and the module does not allow plaintext AUTH; credentials not sent",
            );
            return Err(err.at(Phase::Auth));
        }
        let unverified = report.tls.as_ref().and_then(|t| t.cert_error);
        if let (true, Some(error), false) = (encrypted, unverified, auth.allow_unverified_tls) {
            let err = StepError::new(
                Reason::AuthTlsUnverified,
                format!(
                    "the certificate did not verify ({}) and the module does not allow AUTH over such a session (auth.allow_unverified_tls); credentials not sent",
                    error.as_str()
                ),
            );
            return Err(err.at(Phase::Auth));
        }
        let reply_code = &mut report.auth_reply_code;
        clock
            .time(&mut report.phases, Phase::Auth, async {
                let mechanism = auth::choose(auth.mechanism, &caps.auth_mechanisms)?;
                auth::authenticate(session, mechanism, &auth.credentials, reply_code).await
            })
            .await?;
        report.auth_success = Some(true);
        Ok(())
    }

    /// The envelope check, when the module has one: MAIL FROM, RCPT TO, RSET.
    async fn envelope(&mut self) -> Result<(), Failure> {
        let Some(envelope) = &self.spec.module.envelope else { return Ok(()) };
        let domain = self.spec.mail_domain();
        let (session, report, clock) = self.parts();
        let out = report.envelope.insert(Box::default());
        clock.time(&mut report.phases, Phase::Envelope, envelope::run(session, envelope, domain, out)).await
    }

    /// A delivery probe's first half, after AUTH: the mailbox is opened first (so that its
    /// wait starts at once), then the message is submitted.
    async fn submit(&mut self) -> Result<(), Failure> {
        let Some(delivery) = &self.spec.module.delivery else { return Ok(()) };
        let imap = &delivery.imap;
        let connected = self
            .clock
            .time(&mut self.report.phases, Phase::ImapConnect, delivery::imap::connect(self.spec, imap))
            .await?;
        self.note(|| format!("IMAP connected to {}; {}", connected.peer, connected.tls));
        let mailbox = self
            .clock
            .time(
                &mut self.report.phases,
                Phase::ImapLogin,
                connected.login(imap, self.spec.module.phase_timeout),
            )
            .await?;
        self.note(|| mailbox.describe());
        self.mailbox = Some(Box::new(mailbox));
        let now = std::time::SystemTime::now();
        let token = delivery::message::token(now);
        let message = delivery::message::build(delivery, &token, &self.spec.module.ehlo_hostname, now);
        let (session, report, clock) = self.parts();
        let outcome =
            report.delivery.insert(Box::new(delivery::DeliveryOutcome { token, ..Default::default() }));
        let accepted =
            clock.time(&mut report.phases, Phase::Submit, submit::run(session, delivery, &message)).await?;
        outcome.queue_id = Some(delivery::queue_id(&accepted));
        self.submitted = Some(Instant::now());
        self.note(|| format!("submitted: {accepted}"));
        Ok(())
    }

    /// A delivery probe's second half, after QUIT: wait for the message (`deliver`, from
    /// the 250 after DATA, under the probe's deadline only), read its header (`fetch`),
    /// delete it and sweep leftovers (`cleanup`). A message in the junk folder fails the
    /// probe after cleanup when the module requires the inbox.
    async fn read_back(&mut self) -> Result<(), Failure> {
        let (Some(delivery), Some(mut mailbox), Some(submitted)) =
            (&self.spec.module.delivery, self.mailbox.take(), self.submitted)
        else {
            return Ok(());
        };
        let token = self.report.delivery.as_ref().map(|d| d.token.clone()).unwrap_or_default();
        let wait =
            tokio::time::timeout_at(self.clock.probe, mailbox.wait_for(&token, delivery.poll_interval)).await;
        self.report.phases.push((Phase::Deliver, submitted.elapsed()));
        let skipped = mailbox.skipped();
        if !skipped.is_empty() {
            self.note(|| format!("folders not searched: {}", skipped.join("; ")));
        }
        let outcome = self.report.delivery.get_or_insert_with(Default::default);
        outcome.skipped_folders = Some(skipped.clone());
        let unanswered = mailbox.waiting_for().map(str::to_owned);
        self.mailbox = Some(mailbox);
        let mut found = match wait {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(e.at(Phase::Deliver)),
            Err(_) => {
                return Err(self.undelivered(&token, unanswered, &skipped, submitted).at(Phase::Deliver))
            }
        };
        let mut mailbox = self.mailbox.take().expect("put back above");
        self.note(|| {
            format!("search named UID {:?} in {} ({})", found.uids, found.name, found.folder.as_str())
        });
        let header =
            self.clock.time(&mut self.report.phases, Phase::Fetch, mailbox.header(&mut found, &token)).await;
        let header = match header {
            Ok(header) => header,
            Err(failure) => {
                self.mailbox = Some(mailbox);
                return Err(failure);
            }
        };
        let outcome = self.report.delivery.get_or_insert_with(Default::default);
        outcome.folder = Some(found.folder);
        let path = delivery::headers::path_info(&header);
        let swept = self
            .clock
            .time(&mut self.report.phases, Phase::Cleanup, mailbox.clean_up(&found, delivery.sweep_after))
            .await;
        self.mailbox = Some(mailbox);
        let outcome = self.report.delivery.get_or_insert_with(Default::default);
        outcome.path = Some(path);
        outcome.swept = Some(swept?);
        if found.folder == delivery::Folder::Junk && delivery.require_inbox {
            let detail = format!("the message was filed into {:?}, the junk folder", found.name);
            return Err(StepError::new(Reason::DeliveredToJunk, detail).at(Phase::Deliver));
        }
        Ok(())
    }

    /// Why a delivery probe's wait ended at the deadline: the IMAP server left a command
    /// unanswered (`imap_protocol`: whether the message came is unknown), or it answered
    /// every search and the message never showed (`not_delivered`).
    fn undelivered(
        &self,
        token: &str,
        unanswered: Option<String>,
        skipped: &[String],
        submitted: Instant,
    ) -> StepError {
        let after = submitted.elapsed().as_secs_f64();
        if let Some(what) = unanswered {
            return StepError::new(
                Reason::ImapProtocol,
                format!("{what}: the IMAP server had not answered when the probe's deadline came, {after:.1} s after the message was accepted; whether it arrived is unknown"),
            );
        }
        let queue_id = self.report.delivery.as_ref().and_then(|d| d.queue_id.as_deref()).unwrap_or("none");
        let mut detail = format!(
            "the message (queue id {queue_id}, token {token}) was not in the mailbox {after:.1} s after it was accepted"
        );
        if !skipped.is_empty() {
            detail.push_str(&format!("; {} folders could not be searched", skipped.len()));
        }
        StepError::new(Reason::NotDelivered, detail)
    }

    /// QUIT up to its 221, then the session is closed.
    async fn quit(&mut self) -> Result<(), Failure> {
        let (session, report, clock) = self.parts();
        clock
            .time(&mut report.phases, Phase::Quit, async { session.expect("QUIT", "QUIT", 221).await })
            .await?;
        let mut session = self.session.take().expect("a step runs on an open session");
        self.report.bare_lf_lines += session.bare_lf_lines;
        session.shutdown().await;
        Ok(())
    }

    /// Closes the walk: records the outcome and the total time, then, after an SMTP-level
    /// failure or one of a delivery probe's mailbox before submit, says QUIT politely
    /// (untimed, bounded).
    async fn finish(mut self, outcome: Result<(), Failure>) -> ProbeReport {
        self.report.duration = self.start.elapsed();
        self.report.expectations =
            expect::evaluate(&self.spec.expect, self.spec.transport.mode(), &self.report);
        if let Err(mut failure) = outcome {
            failure.detail = secrets::bound(&self.secrets, &failure.detail);
            // A delivery probe's mailbox is opened with the SMTP session idle after AUTH:
            // whatever failed there, the session can still say QUIT.
            let imap_side = matches!(failure.phase, Phase::ImapConnect | Phase::ImapLogin);
            if failure.reason.session_still_usable() || imap_side {
                if let Some(mut session) = self.session.take() {
                    let _ = tokio::time::timeout(COURTESY_QUIT_TIMEOUT, async {
                        let _ = session.command("QUIT").await;
                        session.shutdown().await;
                    })
                    .await;
                    self.report.bare_lf_lines += session.bare_lf_lines;
                }
            } else if let Some(session) = &self.session {
                self.report.bare_lf_lines += session.bare_lf_lines;
            }
            self.note(|| format!("failed in {}: {} ({})", failure.phase, failure.reason, failure.detail));
            self.report.failure = Some(failure);
        } else {
            self.note(|| "success".to_owned());
        }
        if let Some(mailbox) = self.mailbox.take() {
            let _ = tokio::time::timeout(COURTESY_QUIT_TIMEOUT, mailbox.logout()).await;
        }
        if let Some(delivery) = self.report.delivery.as_mut() {
            // Server text that came after the passwords were sent.
            let texts = delivery.queue_id.iter_mut().chain(delivery.skipped_folders.iter_mut().flatten());
            for text in texts {
                *text = self.secrets.redact(text).into_owned();
            }
        }
        if let Some(recorder) = self.recorder.take() {
            self.session = None;
            let transcript = match Arc::try_unwrap(recorder) {
                Ok(mutex) => mutex.into_inner().unwrap_or_else(|e| e.into_inner()),
                Err(shared) => shared.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            };
            self.report.transcript = Some(Arc::new(transcript));
        }
        self.report
    }
}

/// The secrets a probe of `spec` holds from its start: the SMTP password and the
/// mailbox's. A token is read, and added, by the AUTH step.
fn secrets_of(spec: &ProbeSpec) -> secrets::Secrets {
    let secrets = secrets::Secrets::default();
    if let Some(crate::config::CredentialSource::Password(password)) =
        spec.module.auth.as_ref().map(|a| &a.credentials.secret)
    {
        secrets.add(password.expose());
    }
    if let Some(delivery) = &spec.module.delivery {
        secrets.add(delivery.imap.password.expose());
    }
    secrets
}

/// A TLS handshake in one line: version, cipher, the certificate and its verdict.
fn describe_tls(info: &TlsInfo) -> String {
    let verdict = match (&info.cert_error, &info.cert_error_detail) {
        (None, _) => "verified".to_owned(),
        (Some(e), Some(detail)) => format!("NOT verified, {}: {detail}", e.as_str()),
        (Some(e), None) => format!("NOT verified, {}", e.as_str()),
    };
    let dane = match &info.dane {
        Some(d) => match &d.matched {
            Some(record) => format!("; DANE: matches {}", record.parameters()),
            None => format!("; DANE: matches none of {} usable TLSA records", d.usable),
        },
        None => String::new(),
    };
    format!(
        "TLS {} {}; certificate CN={} issued by CN={}, names {}; {verdict}{dane}",
        info.version,
        info.cipher,
        info.subject_cn,
        info.issuer_cn,
        if info.leaf_names.is_empty() { "none".to_owned() } else { info.leaf_names.join(", ") }
    )
}

/// The probe's overall deadline and the per-phase timeout.
#[derive(Clone, Copy)]
struct Deadlines {
    probe: Instant,
    phase: Duration,
}

impl Deadlines {
    /// Times `fut` as `phase` under both deadlines and records it in `phases`.
    async fn time<T>(
        self,
        phases: &mut Vec<(Phase, Duration)>,
        phase: Phase,
        fut: impl Future<Output = Result<T, StepError>>,
    ) -> Result<T, Failure> {
        timed(phases, self.probe, self.phase, phase, fut).await
    }
}

/// Times `fut` as `phase` under `min(now + phase_timeout, deadline)`, and records it.
async fn timed<T>(
    phases: &mut Vec<(Phase, Duration)>,
    deadline: Instant,
    phase_timeout: Duration,
    phase: Phase,
    fut: impl Future<Output = Result<T, StepError>>,
) -> Result<T, Failure> {
    let begin = Instant::now();
    let limit = deadline.min(begin + phase_timeout);
    let result = tokio::time::timeout_at(limit, fut).await;
    phases.push((phase, begin.elapsed()));
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.at(phase)),
        Err(_) => {
            let which = if limit == deadline { "probe timeout" } else { "phase timeout" };
            Err(Failure {
                phase,
                reason: Reason::Timeout,
                detail: format!("{which} reached after {:?}", limit - begin),
            })
        }
    }
}

/// Sends EHLO, or HELO when EHLO is refused with a 5xx (old or minimal servers). Returns
/// the capabilities and whether HELO was used.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<S>,
    hostname: &str,
) -> Result<(Capabilities, bool), StepError> {
    let reply = session.command(&format!("EHLO {hostname}")).await?;
    if reply.code == 250 {
        return Ok((Capabilities::parse(&reply.lines), false));
    }
    // 421 closes the channel: no fallback, report it as it is.
    if reply.class() == 5 {
        let helo = session.command(&format!("HELO {hostname}")).await?;
        if helo.code == 250 {
            return Ok((Capabilities::parse(&helo.lines[..1]), true));
        }
        return Err(helo.unexpected("HELO"));
    }
    Err(reply.unexpected("EHLO"))
}

/// `host` looked up with the configuration's resolver (an IP literal is its own answer).
async fn resolve(spec: &ProbeSpec) -> Result<SocketAddr, StepError> {
    let family = spec.module.ip_protocol.family();
    match spec.resolver.first_address(&spec.host, family).await {
        Ok(ip) => Ok(SocketAddr::new(ip, spec.port)),
        Err(e) => Err(StepError::new(e.failure.reason(), format!("resolving {}", e.detail))),
    }
}

/// Why a connect failed: an unreachable network to which this host has no route at all is
/// `no_route` (its own routing table, not the path to the server; `no_local_route` is
/// asked only then), else what the error says.
fn connect_reason(error: &std::io::Error, no_local_route: impl FnOnce() -> bool) -> Reason {
    match crate::sys::reason_of(error) {
        Reason::Unreachable if no_local_route() => Reason::NoRoute,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: the no-route detection, exactly: only an unreachable network without a
    /// local route is `no_route`; a route makes it `unreachable`, and a refused connect
    /// stays `refused` whatever the routing table says.
    #[test]
    fn only_an_unreachable_network_without_a_local_route_is_no_route() {
        let unreachable = std::io::Error::from(std::io::ErrorKind::NetworkUnreachable);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_reason(&unreachable, || true), Reason::NoRoute);
        assert_eq!(connect_reason(&unreachable, || false), Reason::Unreachable);
        assert_eq!(connect_reason(&refused, || true), Reason::Refused);
        assert_eq!(connect_reason(&refused, || panic!("asked without need")), Reason::Refused);
    }
}
