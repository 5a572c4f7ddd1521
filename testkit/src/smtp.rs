//! A scriptable fake SMTP server: the one SMTP responder of the tests and of the bench.
//!
//! It speaks just enough SMTP for the probe (greeting, EHLO/HELO, STARTTLS, AUTH PLAIN,
//! LOGIN, CRAM-MD5 and XOAUTH2, MAIL/RCPT/DATA, QUIT, RSET/NOOP) and lets a test bend each
//! step: delay or break the greeting, withhold STARTTLS, inject bytes after STARTTLS, reject
//! AUTH or a recipient, slow every reply down. It records what the client sent and what the
//! server measured, so tests can check both sides; a message accepted after DATA is handed
//! to [`Behaviour::on_message`], which a test uses to deliver it (into the fake IMAP store of
//! `crate::imap`, say).
//!
//! Three ways in, from the most to the least managed:
//! - [`FakeSmtp::start`]: a listener on 127.0.0.1:0 that keeps an [`Observed`] for every
//!   connection (the integration tests);
//! - [`serve_listener`]: a listener the caller bound, reporting each session to a
//!   [`Watcher`] as it goes instead of keeping it (the bench's responder, a process of its
//!   own that serves thousands of sessions on a thousand listeners);
//! - [`serve`] and [`serve_session`]: one connection over any stream, a socket or
//!   `tokio::io::duplex`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestPki;

/// How long the server waits for each command line.
const COMMAND_WAIT: Duration = Duration::from_secs(10);
/// The most bytes of one message after DATA, dot-stuffing included; more ends the session
/// as a failure.
const MAX_MESSAGE_BYTES: usize = 10 << 20;

/// What the server does with a message it accepted: called with the message (dot-stuffing
/// undone, the final `.` line removed) right after the 250 has been written. It runs on the
/// server's task, inside the runtime: to deliver later, spawn.
pub type MessageHook = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// How the fake server behaves. Start from [`Behaviour::default`] and change what the
/// test is about.
#[derive(Clone)]
pub struct Behaviour {
    /// Raw greeting bytes, sent as they are (so tests can send garbage).
    pub greeting: Vec<u8>,
    /// Sent after the greeting's first part, with [`Behaviour::greeting_split_delay`]
    /// in between: a multi-line greeting arriving in two pieces.
    pub greeting_rest: Vec<u8>,
    pub greeting_split_delay: Duration,
    /// Wait this long after accept before the greeting (after the handshake, with implicit
    /// TLS).
    pub greeting_delay: Duration,
    /// Close the connection right after the greeting bytes.
    pub close_after_greeting: bool,
    /// TLS from the first byte.
    pub implicit_tls: bool,
    /// Advertise and accept STARTTLS.
    pub starttls: bool,
    /// Bytes sent right after the 220 to STARTTLS, before the handshake.
    pub starttls_injection: Vec<u8>,
    /// AUTH mechanisms advertised (only once TLS is up, unless `auth_before_tls`).
    pub auth_mechanisms: Vec<&'static str>,
    pub auth_before_tls: bool,
    /// The accepted credentials.
    pub username: String,
    pub password: String,
    /// Replace the reply to a complete AUTH exchange (e.g. "454 4.7.0 try later").
    pub auth_reply_override: Option<String>,
    /// Reply to EHLO with this instead of the capability list (e.g. "502 no EHLO").
    pub ehlo_reply_override: Option<String>,
    /// Reply to STARTTLS with this instead of 220 (e.g. "421 shutting down").
    pub starttls_reply_override: Option<String>,
    /// The accepted XOAUTH2 bearer token; shared, so a test can rotate it.
    pub xoauth2_token: Arc<Mutex<String>>,
    /// On implicit TLS, answer the ClientHello with a `protocol_version` alert, as a
    /// server that only speaks TLS 1.0 does.
    pub tls_protocol_version_alert: bool,
    /// End lines with a bare LF.
    pub bare_lf: bool,
    /// Wait this long before every reply after the greeting, AUTH prompts and the 220 to
    /// STARTTLS included: a slow server, or the round trip of a real network.
    pub reply_delay: Duration,
    /// EHLO keywords advertised on top of the usual ones, just before `8BITMIME`.
    pub extra_ehlo_keywords: Vec<String>,
    /// The longest command line read, line ending included; a longer one ends the session
    /// as a failure. Unbounded by default.
    pub max_line_bytes: usize,
    /// Commands served on one connection (AUTH continuation lines not counted); one more
    /// ends the session as a failure. Unbounded by default.
    pub max_commands: usize,
    /// The whole session, greeting included, ends as a failure after this long. `None`:
    /// only the wait for each command line ([`COMMAND_WAIT`], 10 s) bounds it.
    pub session_time_limit: Option<Duration>,
    /// Reply to MAIL FROM with this instead of 250.
    pub mail_reply_override: Option<String>,
    /// Replies to RCPT TO by address (without the angle brackets); any other gets 250.
    pub rcpt_replies: Vec<(String, String)>,
    /// Reply to the end of DATA with this instead of `250 2.0.0 Ok: queued as <ID>`; the
    /// message is then neither recorded nor handed on.
    pub data_reply_override: Option<String>,
    /// Gets every message accepted after DATA; `None`: the message is only recorded (in
    /// [`Observed::messages`]) and goes nowhere, as if dropped.
    pub on_message: Option<MessageHook>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            greeting: b"220 fake.example.test ESMTP ready\r\n".to_vec(),
            greeting_rest: Vec::new(),
            greeting_split_delay: Duration::ZERO,
            greeting_delay: Duration::ZERO,
            close_after_greeting: false,
            implicit_tls: false,
            starttls: true,
            starttls_injection: Vec::new(),
            auth_mechanisms: vec!["PLAIN", "LOGIN"],
            auth_before_tls: false,
            username: "probe@example.test".into(),
            password: "correct horse".into(),
            auth_reply_override: None,
            ehlo_reply_override: None,
            starttls_reply_override: None,
            xoauth2_token: Arc::new(Mutex::new("token-1".into())),
            tls_protocol_version_alert: false,
            bare_lf: false,
            reply_delay: Duration::ZERO,
            extra_ehlo_keywords: Vec::new(),
            max_line_bytes: usize::MAX,
            max_commands: usize::MAX,
            session_time_limit: None,
            mail_reply_override: None,
            rcpt_replies: Vec::new(),
            data_reply_override: None,
            on_message: None,
        }
    }
}

/// What the server saw on one connection.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Command lines received, in order (AUTH payloads included, for leak checks).
    pub lines: Vec<String>,
    /// Bytes that arrived before the greeting was complete (a client must wait).
    pub early_bytes: bool,
    /// Time from accept to the end of writing the greeting, as the server measured it.
    /// `None` when the server did not write it (or the caller did, see [`Start::Greeted`]).
    pub greeting_sent_after: Option<Duration>,
    /// Whether the session was inside TLS when AUTH arrived.
    pub auth_over_tls: Option<bool>,
    /// A TLS handshake completed (implicit TLS or STARTTLS).
    pub tls_established: bool,
    /// An AUTH exchange ended with the right credentials.
    pub authenticated: bool,
    /// Why the session ended before the client quit or closed: an I/O error, a failed
    /// handshake, a bound of [`Behaviour`]. `None` also when the behaviour itself ended
    /// it (`close_after_greeting`, the TLS alert).
    pub failure: Option<String>,
    /// The messages accepted after DATA, in order.
    pub messages: Vec<Message>,
}

/// A message the server accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The id named in the 250 (`queued as <ID>`).
    pub queue_id: String,
    /// The message as the client meant it: dot-stuffing undone, without the final `.`.
    pub data: Vec<u8>,
}

/// Hears how each session goes, as it goes, so that a long-running server can count and
/// time its sessions instead of keeping every [`Observed`]. Every method defaults to
/// doing nothing.
pub trait Watcher: Send + Sync {
    /// A connection was accepted, just now.
    fn accepted(&self) {}
    /// The whole greeting was written, `after` the accept.
    fn greeted(&self, _after: Duration) {}
    /// The session ended; `seen` is what it observed.
    fn finished(&self, _seen: &Observed) {}
}

/// The watcher of a lone [`serve`]: its caller gets the [`Observed`] back.
struct Unwatched;

impl Watcher for Unwatched {}

/// The watcher of [`FakeSmtp`]: keeps every finished session.
#[derive(Default)]
struct Recorder {
    sessions: Mutex<Vec<Observed>>,
}

impl Watcher for Recorder {
    fn finished(&self, seen: &Observed) {
        self.sessions.lock().unwrap().push(seen.clone());
    }
}

/// Where a session starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Accepted at this instant: the server writes the greeting `greeting_delay` after it.
    Accepted(Instant),
    /// The caller has already written the whole greeting (the bench writes it from a
    /// blocking thread to time it to the microsecond); the session starts with the first
    /// command. The greeting fields, `implicit_tls` and the TLS alert are not used.
    Greeted,
}

/// A running fake server on 127.0.0.1.
pub struct FakeSmtp {
    pub addr: SocketAddr,
    recorder: Arc<Recorder>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSmtp {
    /// Starts a server that treats every connection with `behaviour`.
    pub async fn start(behaviour: Behaviour, pki: &TestPki) -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake smtp");
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(Recorder::default());
        let task = tokio::spawn(serve_listener(listener, behaviour, pki.acceptor(), recorder.clone()));
        FakeSmtp { addr, recorder, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What the server saw, one entry per finished connection.
    pub fn observed(&self) -> Vec<Observed> {
        self.recorder.sessions.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` connections have finished, then returns them.
    pub async fn wait_for_connections(&self, n: usize) -> Vec<Observed> {
        crate::wait_for_sessions(&self.recorder.sessions, n, "fake server").await
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections on `listener` until this future is dropped, and serves each on a
/// task of its own with `behaviour`, telling `watcher` how each goes. Nagle's algorithm is
/// turned off on every connection, so that small replies leave at once. An accept error
/// (out of file descriptors, say) is retried after 10 ms.
pub async fn serve_listener(
    listener: TcpListener,
    behaviour: Behaviour,
    acceptor: TlsAcceptor,
    watcher: Arc<dyn Watcher>,
) {
    let behaviour = Arc::new(behaviour);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let accepted = Instant::now();
        watcher.accepted();
        let _ = tcp.set_nodelay(true);
        let (behaviour, acceptor, watcher) = (behaviour.clone(), acceptor.clone(), watcher.clone());
        tokio::spawn(async move {
            serve_session(tcp, &behaviour, &acceptor, Start::Accepted(accepted), &*watcher).await;
        });
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Stream = Box<dyn Io>;

/// Serves one connection on any stream. Public so tests can run it over `duplex`.
pub async fn serve<S>(stream: S, b: Behaviour, acceptor: TlsAcceptor) -> Observed
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_session(stream, &b, &acceptor, Start::Accepted(Instant::now()), &Unwatched).await
}

/// Serves one connection from `start`, telling `watcher` about the greeting and the end.
pub async fn serve_session<S>(
    stream: S,
    b: &Behaviour,
    acceptor: &TlsAcceptor,
    start: Start,
    watcher: &dyn Watcher,
) -> Observed
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut seen = Observed::default();
    let session = walk(Box::new(stream), b, acceptor, start, watcher, &mut seen);
    let outcome = match b.session_time_limit {
        Some(limit) => tokio::time::timeout(limit, session)
            .await
            .unwrap_or_else(|_| Err(format!("session longer than {limit:?}"))),
        None => session.await,
    };
    if let Err(failure) = outcome {
        seen.failure.get_or_insert(failure);
    }
    watcher.finished(&seen);
    seen
}

/// The whole session: greeting (unless the caller wrote it), then commands.
async fn walk(
    mut stream: Stream,
    b: &Behaviour,
    acceptor: &TlsAcceptor,
    start: Start,
    watcher: &dyn Watcher,
    seen: &mut Observed,
) -> Result<(), String> {
    if let Start::Accepted(accepted) = start {
        if b.tls_protocol_version_alert {
            refuse_tls(&mut stream).await;
            return Ok(());
        }
        let mut greeting_from = accepted;
        if b.implicit_tls {
            stream = Box::new(acceptor.accept(stream).await.map_err(|e| format!("TLS handshake: {e}"))?);
            seen.tls_established = true;
            greeting_from = Instant::now();
        }
        greet(&mut stream, b, greeting_from, seen).await?;
        let after = accepted.elapsed();
        seen.greeting_sent_after = Some(after);
        watcher.greeted(after);
        if b.close_after_greeting {
            return Ok(());
        }
    }
    converse(stream, b, acceptor, seen).await
}

/// Answers a ClientHello with a TLS 1.0 record carrying a fatal `protocol_version` alert.
async fn refuse_tls(stream: &mut Stream) {
    let mut hello = [0u8; 512];
    let _ = stream.read(&mut hello).await;
    let _ = stream.write_all(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]).await;
}

/// Writes the greeting `greeting_delay` after `from`, in two pieces when the behaviour
/// splits it, and notes whether the client wrote before the second piece.
async fn greet(stream: &mut Stream, b: &Behaviour, from: Instant, seen: &mut Observed) -> Result<(), String> {
    pause_until(from + b.greeting_delay).await;
    write_flush(stream, &b.greeting, "greeting").await?;
    if b.greeting_rest.is_empty() {
        return Ok(());
    }
    tokio::time::sleep(b.greeting_split_delay).await;
    // A client that did not wait for the whole greeting has written by now.
    let mut probe = [0u8; 1];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
        seen.early_bytes = n > 0;
    }
    write_flush(stream, &b.greeting_rest, "greeting").await
}

/// What to do after a command.
enum Next {
    Reply(String),
    /// The reply has been written already.
    Read,
    /// The client went away in the middle of an exchange.
    Closed,
}

/// Reads and answers commands until QUIT, the end of the stream, or a bound.
async fn converse(
    stream: Stream,
    b: &Behaviour,
    acceptor: &TlsAcceptor,
    seen: &mut Observed,
) -> Result<(), String> {
    let eol = if b.bare_lf { "\n" } else { "\r\n" };
    let mut tls = seen.tls_established;
    let mut reader = BufReader::new(stream);
    // Whether MAIL FROM and at least one RCPT TO were accepted since the last reset.
    let (mut mail, mut rcpt) = (false, false);
    for _ in 0..b.max_commands {
        let Some(line) = read_line(&mut reader, b).await? else { return Ok(()) };
        seen.lines.push(line.clone());
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        let next = match verb {
            "EHLO" => Next::Reply(ehlo_reply(b, tls, eol)),
            "HELO" => Next::Reply(format!("250 fake.example.test{eol}")),
            "STARTTLS" if b.starttls && !tls => match &b.starttls_reply_override {
                Some(r) => Next::Reply(format!("{r}{eol}")),
                None => {
                    reader = start_tls(reader, b, acceptor, eol, seen).await?;
                    tls = true;
                    Next::Read
                }
            },
            "AUTH" => authenticate(&mut reader, b, &line, tls, eol, seen).await?,
            "QUIT" => {
                let w = reader.get_mut();
                reply(w, b, format!("221 2.0.0 Bye{eol}").as_bytes()).await?;
                let _ = w.shutdown().await;
                return Ok(());
            }
            "NOOP" => Next::Reply(format!("250 2.0.0 Ok{eol}")),
            "RSET" => {
                (mail, rcpt) = (false, false);
                Next::Reply(format!("250 2.0.0 Ok{eol}"))
            }
            "MAIL" => {
                let text = match &b.mail_reply_override {
                    Some(r) => r.clone(),
                    None => "250 2.1.0 Ok".to_owned(),
                };
                (mail, rcpt) = (text.starts_with('2'), false);
                Next::Reply(format!("{text}{eol}"))
            }
            "RCPT" => {
                let address = line.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(a, _)| a);
                let listed = b.rcpt_replies.iter().find(|(a, _)| Some(a.as_str()) == address);
                let text = match listed {
                    Some((_, r)) => r.clone(),
                    None => "250 2.1.5 Ok".to_owned(),
                };
                rcpt |= mail && text.starts_with('2');
                Next::Reply(format!("{text}{eol}"))
            }
            "DATA" if !rcpt => Next::Reply(format!("503 5.5.1 Error: need RCPT command{eol}")),
            "DATA" => {
                (mail, rcpt) = (false, false);
                data(&mut reader, b, eol, seen).await?
            }
            _ => Next::Reply(format!("502 5.5.2 command not recognized{eol}")),
        };
        match next {
            Next::Reply(text) => reply(reader.get_mut(), b, text.as_bytes()).await?,
            Next::Read => {}
            Next::Closed => return Ok(()),
        }
    }
    Err(format!("more than {} commands", b.max_commands))
}

/// DATA: 354, the message up to the lone `.` (dot-stuffing undone, at most
/// [`MAX_MESSAGE_BYTES`]), then 250 with a queue id; the message is recorded and handed to
/// the behaviour's hook after the 250 is written.
async fn data(
    reader: &mut BufReader<Stream>,
    b: &Behaviour,
    eol: &str,
    seen: &mut Observed,
) -> Result<Next, String> {
    static QUEUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    reply(reader.get_mut(), b, format!("354 End data with <CR><LF>.<CR><LF>{eol}").as_bytes()).await?;
    let mut message = Vec::new();
    let mut read = 0usize;
    loop {
        let mut line = Vec::new();
        let left = MAX_MESSAGE_BYTES.saturating_sub(read) as u64;
        let mut bounded = (&mut *reader).take(left);
        let n = match tokio::time::timeout(COMMAND_WAIT, bounded.read_until(b'\n', &mut line)).await {
            Ok(n) => n.map_err(|e| format!("read message: {e}"))?,
            Err(_) => return Err(format!("no message line within {COMMAND_WAIT:?}")),
        };
        read += n;
        if !line.ends_with(b"\n") {
            if read >= MAX_MESSAGE_BYTES {
                return Err(format!("message longer than {MAX_MESSAGE_BYTES} bytes"));
            }
            // The client went away in the middle of the message.
            return Ok(Next::Closed);
        }
        if line == b".\r\n" || line == b".\n" {
            break;
        }
        let unstuffed = if line.starts_with(b".") { &line[1..] } else { &line[..] };
        message.extend_from_slice(unstuffed);
    }
    if let Some(r) = &b.data_reply_override {
        return Ok(Next::Reply(format!("{r}{eol}")));
    }
    let queue_id = format!("FAKE{:08X}", QUEUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    reply(reader.get_mut(), b, format!("250 2.0.0 Ok: queued as {queue_id}{eol}").as_bytes()).await?;
    seen.messages.push(Message { queue_id, data: message.clone() });
    if let Some(hook) = &b.on_message {
        hook(message);
    }
    Ok(Next::Read)
}

/// The capability list: STARTTLS until TLS is up, AUTH once it is (or before, when the
/// behaviour says so).
fn ehlo_reply(b: &Behaviour, tls: bool, eol: &str) -> String {
    if let Some(r) = &b.ehlo_reply_override {
        return format!("{r}{eol}");
    }
    let mut caps =
        vec!["fake.example.test greets you".to_owned(), "PIPELINING".into(), "SIZE 10240000".into()];
    if b.starttls && !tls && !b.implicit_tls {
        caps.push("STARTTLS".into());
    }
    if !b.auth_mechanisms.is_empty() && (tls || b.auth_before_tls) {
        caps.push(format!("AUTH {}", b.auth_mechanisms.join(" ")));
    }
    caps.extend(b.extra_ehlo_keywords.iter().cloned());
    caps.push("8BITMIME".into());
    let n = caps.len();
    caps.iter()
        .enumerate()
        .map(|(i, c)| format!("250{}{c}{eol}", if i + 1 == n { ' ' } else { '-' }))
        .collect()
}

/// Answers STARTTLS with 220 (and the injected bytes), then runs the server handshake.
async fn start_tls(
    reader: BufReader<Stream>,
    b: &Behaviour,
    acceptor: &TlsAcceptor,
    eol: &str,
    seen: &mut Observed,
) -> Result<BufReader<Stream>, String> {
    if !reader.buffer().is_empty() {
        // They would be lost with the buffer, as a careful server drops them (RFC 3207 §5).
        seen.failure.get_or_insert_with(|| "bytes pipelined after STARTTLS".to_owned());
    }
    let mut inner = reader.into_inner();
    let mut out = format!("220 2.0.0 Ready to start TLS{eol}").into_bytes();
    out.extend_from_slice(&b.starttls_injection);
    reply(&mut inner, b, &out).await?;
    let tls = acceptor.accept(inner).await.map_err(|e| format!("TLS handshake: {e}"))?;
    seen.tls_established = true;
    Ok(BufReader::new(Box::new(tls)))
}

/// Runs the AUTH exchange that `line` starts; returns the final reply.
async fn authenticate(
    reader: &mut BufReader<Stream>,
    b: &Behaviour,
    line: &str,
    tls: bool,
    eol: &str,
    seen: &mut Observed,
) -> Result<Next, String> {
    seen.auth_over_tls = Some(tls);
    let mechanism = line.split_whitespace().nth(1).unwrap_or("").to_ascii_uppercase();
    let initial = line.split_whitespace().nth(2).unwrap_or("");
    let verdict = match mechanism.as_str() {
        "PLAIN" => Some(initial == B64.encode(format!("\0{}\0{}", b.username, b.password))),
        "LOGIN" => login(reader, b, eol, seen).await?,
        "CRAM-MD5" => cram_md5(reader, b, eol, seen).await?,
        "XOAUTH2" => xoauth2(reader, b, initial, eol, seen).await?,
        _ => {
            reply(reader.get_mut(), b, format!("504 5.5.4 unrecognized mechanism{eol}").as_bytes()).await?;
            return Ok(Next::Read);
        }
    };
    let Some(ok) = verdict else { return Ok(Next::Closed) };
    seen.authenticated = ok;
    Ok(Next::Reply(match &b.auth_reply_override {
        Some(r) => format!("{r}{eol}"),
        None if ok => format!("235 2.7.0 Authentication successful{eol}"),
        None => format!("535 5.7.8 Error: authentication failed{eol}"),
    }))
}

/// Sends a 334 challenge and reads the client's answer (`None`: the client went away).
async fn challenge(
    reader: &mut BufReader<Stream>,
    b: &Behaviour,
    text: &str,
    eol: &str,
    seen: &mut Observed,
) -> Result<Option<String>, String> {
    reply(reader.get_mut(), b, format!("334 {text}{eol}").as_bytes()).await?;
    let answer = read_line(reader, b).await?;
    if let Some(answer) = &answer {
        seen.lines.push(answer.clone());
    }
    Ok(answer)
}

/// AUTH LOGIN: the user name and the password, each after its prompt.
async fn login(
    reader: &mut BufReader<Stream>,
    b: &Behaviour,
    eol: &str,
    seen: &mut Observed,
) -> Result<Option<bool>, String> {
    let mut ok = true;
    for (prompt, want) in [("VXNlcm5hbWU6", &b.username), ("UGFzc3dvcmQ6", &b.password)] {
        let Some(answer) = challenge(reader, b, prompt, eol, seen).await? else { return Ok(None) };
        ok &= answer == B64.encode(want.as_bytes());
    }
    Ok(Some(ok))
}

/// AUTH CRAM-MD5 with a fixed challenge.
async fn cram_md5(
    reader: &mut BufReader<Stream>,
    b: &Behaviour,
    eol: &str,
    seen: &mut Observed,
) -> Result<Option<bool>, String> {
    use hmac::{KeyInit, Mac};
    let nonce = "<12345.67890@fake.example.test>";
    let Some(answer) = challenge(reader, b, &B64.encode(nonce), eol, seen).await? else { return Ok(None) };
    let decoded = String::from_utf8(B64.decode(&answer).unwrap_or_default()).unwrap_or_default();
    let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(b.password.as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    let digest: String = mac.finalize().into_bytes().iter().map(|x| format!("{x:02x}")).collect();
    Ok(Some(decoded == format!("{} {digest}", b.username)))
}

/// AUTH XOAUTH2 with the token in the command; a wrong token gets the RFC 7628-style error
/// challenge first, whose empty answer is read before the final reply.
async fn xoauth2(
    reader: &mut BufReader<Stream>,
    b: &Behaviour,
    payload: &str,
    eol: &str,
    seen: &mut Observed,
) -> Result<Option<bool>, String> {
    // Parsed as the mechanism defines it (fields separated by ^A, the last two empty),
    // not compared with a payload built the way the client builds it.
    let token = b.xoauth2_token.lock().unwrap().clone();
    let decoded = B64.decode(payload.trim()).ok().and_then(|d| String::from_utf8(d).ok()).unwrap_or_default();
    let fields: Vec<&str> = decoded.split('\x01').collect();
    let accepted = matches!(fields.as_slice(), [user, auth, "", ""]
        if user.strip_prefix("user=") == Some(b.username.as_str())
            && auth.strip_prefix("auth=Bearer ") == Some(token.as_str()));
    if accepted {
        return Ok(Some(true));
    }
    let error = B64.encode(r#"{"status":"401","schemes":"bearer"}"#);
    Ok(challenge(reader, b, &error, eol, seen).await?.map(|_| false))
}

/// One command line without its ending, waiting at most [`COMMAND_WAIT`]; `None` at the
/// end of the stream.
async fn read_line(reader: &mut BufReader<Stream>, b: &Behaviour) -> Result<Option<String>, String> {
    let mut line = String::new();
    let mut bounded = (&mut *reader).take(b.max_line_bytes.try_into().unwrap_or(u64::MAX));
    let n = match tokio::time::timeout(COMMAND_WAIT, bounded.read_line(&mut line)).await {
        Ok(read) => read.map_err(|e| format!("read: {e}"))?,
        Err(_) => return Err(format!("no command within {COMMAND_WAIT:?}")),
    };
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') && n >= b.max_line_bytes {
        return Err(format!("command line longer than {} bytes", b.max_line_bytes));
    }
    Ok(Some(line.trim_end().to_owned()))
}

/// Writes one reply after the behaviour's reply delay.
async fn reply<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, b: &Behaviour, bytes: &[u8]) -> Result<(), String> {
    pause_until(Instant::now() + b.reply_delay).await;
    write_flush(w, bytes, "reply").await
}

async fn write_flush<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
    what: &str,
) -> Result<(), String> {
    w.write_all(bytes).await.map_err(|e| format!("write {what}: {e}"))?;
    w.flush().await.map_err(|e| format!("flush {what}: {e}"))
}

/// Sleeps until `deadline`, without touching the timer when it has passed already.
async fn pause_until(deadline: Instant) {
    if deadline > Instant::now() {
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::DuplexStream;

    /// Reads one whole reply (up to its last line, the one with a space after the code).
    async fn read_reply(client: &mut DuplexStream) -> String {
        let mut text = Vec::new();
        let mut byte = [0u8; 1];
        while client.read(&mut byte).await.unwrap() == 1 {
            text.push(byte[0]);
            let last_line = text[..text.len() - 1].rsplit(|&b| b == b'\n').next().unwrap_or(&[]);
            if byte[0] == b'\n' && last_line.get(3) == Some(&b' ') {
                break;
            }
        }
        String::from_utf8(text).unwrap()
    }

    /// Serves `behaviour` over an in-memory pipe; returns the client's end and the session.
    fn serve_in_memory(
        behaviour: Behaviour,
        start: Start,
    ) -> (DuplexStream, tokio::task::JoinHandle<Observed>, TestPki) {
        let pki = TestPki::new();
        let (client, server) = tokio::io::duplex(4096);
        let acceptor = pki.acceptor();
        let session =
            tokio::spawn(
                async move { serve_session(server, &behaviour, &acceptor, start, &Unwatched).await },
            );
        (client, session, pki)
    }

    #[tokio::test]
    async fn the_reply_delay_holds_back_every_reply_after_the_greeting() {
        let delay = Duration::from_millis(40);
        let behaviour = Behaviour { reply_delay: delay, ..Behaviour::default() };
        let (mut client, session, _pki) = serve_in_memory(behaviour, Start::Accepted(Instant::now()));
        assert!(read_reply(&mut client).await.starts_with("220 "));
        for command in ["EHLO client.test\r\n", "QUIT\r\n"] {
            let sent = Instant::now();
            client.write_all(command.as_bytes()).await.unwrap();
            read_reply(&mut client).await;
            assert!(sent.elapsed() >= delay, "{command:?} answered after {:?}", sent.elapsed());
        }
        assert_eq!(session.await.unwrap().failure, None);
    }

    #[tokio::test]
    async fn extra_ehlo_keywords_are_advertised_before_8bitmime() {
        let behaviour = Behaviour {
            starttls: false,
            extra_ehlo_keywords: vec!["ENHANCEDSTATUSCODES".into()],
            ..Behaviour::default()
        };
        let (mut client, _session, _pki) = serve_in_memory(behaviour, Start::Accepted(Instant::now()));
        read_reply(&mut client).await;
        client.write_all(b"EHLO client.test\r\n").await.unwrap();
        assert!(read_reply(&mut client).await.ends_with("250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"));
    }

    #[tokio::test]
    async fn a_session_past_its_line_or_command_bound_ends_as_a_failure() {
        let long_line = Behaviour { max_line_bytes: 16, ..Behaviour::default() };
        let many_commands = Behaviour { max_commands: 2, ..Behaviour::default() };
        for (behaviour, sent, failure, lines) in [
            (
                long_line,
                "EHLO a-rather-long-name.example.test\r\n",
                "command line longer than 16 bytes",
                vec![],
            ),
            (many_commands, "NOOP\r\nNOOP\r\nNOOP\r\n", "more than 2 commands", vec!["NOOP", "NOOP"]),
        ] {
            let (mut client, session, _pki) = serve_in_memory(behaviour, Start::Accepted(Instant::now()));
            read_reply(&mut client).await;
            client.write_all(sent.as_bytes()).await.unwrap();
            let seen = session.await.unwrap();
            assert_eq!(seen.failure.as_deref(), Some(failure));
            assert_eq!(seen.lines, lines);
        }
    }

    #[tokio::test]
    async fn a_session_past_its_time_limit_ends_as_a_failure() {
        let limit = Duration::from_millis(50);
        let behaviour = Behaviour { session_time_limit: Some(limit), ..Behaviour::default() };
        let (mut client, session, _pki) = serve_in_memory(behaviour, Start::Accepted(Instant::now()));
        read_reply(&mut client).await;
        let seen = session.await.unwrap();
        assert_eq!(seen.failure, Some(format!("session longer than {limit:?}")));
        assert!(seen.greeting_sent_after.is_some());
    }

    #[tokio::test]
    async fn a_greeted_session_starts_with_the_first_command() {
        let behaviour = Behaviour { starttls: false, ..Behaviour::default() };
        let (mut client, session, _pki) = serve_in_memory(behaviour, Start::Greeted);
        client.write_all(b"EHLO client.test\r\nQUIT\r\n").await.unwrap();
        assert!(read_reply(&mut client).await.starts_with("250-fake.example.test greets you\r\n"));
        assert!(read_reply(&mut client).await.starts_with("221 "));
        let seen = session.await.unwrap();
        assert_eq!((seen.greeting_sent_after, seen.failure), (None, None));
        assert_eq!(seen.lines, ["EHLO client.test", "QUIT"]);
    }

    #[tokio::test]
    async fn authentication_is_recorded_with_its_verdict() {
        for (password, authenticated) in [("correct horse", true), ("wrong", false)] {
            let behaviour = Behaviour { starttls: false, auth_before_tls: true, ..Behaviour::default() };
            let (mut client, session, _pki) = serve_in_memory(behaviour, Start::Accepted(Instant::now()));
            read_reply(&mut client).await;
            let token = B64.encode(format!("\0probe@example.test\0{password}"));
            client.write_all(format!("AUTH PLAIN {token}\r\nQUIT\r\n").as_bytes()).await.unwrap();
            let code = if authenticated { "235 " } else { "535 " };
            assert!(read_reply(&mut client).await.starts_with(code));
            read_reply(&mut client).await;
            let seen = session.await.unwrap();
            assert_eq!(
                (seen.authenticated, seen.auth_over_tls, seen.tls_established),
                (authenticated, Some(false), false)
            );
        }
    }

    #[tokio::test]
    async fn data_is_unstuffed_recorded_and_handed_on_after_the_250() {
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let hook: MessageHook = {
            let delivered = delivered.clone();
            Arc::new(move |message| delivered.lock().unwrap().push(message))
        };
        let behaviour = Behaviour { starttls: false, on_message: Some(hook), ..Behaviour::default() };
        let (mut client, session, _pki) = serve_in_memory(behaviour, Start::Accepted(Instant::now()));
        read_reply(&mut client).await;
        client.write_all(b"DATA\r\n").await.unwrap();
        assert!(read_reply(&mut client).await.starts_with("503 "), "DATA before RCPT TO");
        for (command, code) in
            [("MAIL FROM:<a@example.test>", "250 "), ("RCPT TO:<b@example.test>", "250 "), ("DATA", "354 ")]
        {
            client.write_all(format!("{command}\r\n").as_bytes()).await.unwrap();
            assert!(read_reply(&mut client).await.starts_with(code), "{command}");
        }
        assert!(delivered.lock().unwrap().is_empty());
        client.write_all(b"Subject: x\r\n\r\n..leading dot\r\n..\r\nlast\r\n.\r\n").await.unwrap();
        let queued = read_reply(&mut client).await;
        let queue_id = queued
            .strip_prefix("250 2.0.0 Ok: queued as ")
            .unwrap_or_else(|| panic!("{queued:?}"))
            .trim_end();
        client.write_all(b"QUIT\r\n").await.unwrap();
        read_reply(&mut client).await;
        let seen = session.await.unwrap();
        let message = b"Subject: x\r\n\r\n.leading dot\r\n.\r\nlast\r\n".to_vec();
        assert_eq!(*delivered.lock().unwrap(), vec![message.clone()]);
        assert_eq!(seen.messages, vec![Message { queue_id: queue_id.to_owned(), data: message }]);
        assert_eq!(seen.lines.last().map(String::as_str), Some("QUIT"), "message lines are not commands");
        assert_eq!(seen.failure, None);
    }

    /// Counts what a watcher hears, and keeps the finished sessions.
    #[derive(Default)]
    struct Counting {
        accepted: AtomicUsize,
        greeted: Mutex<Vec<Duration>>,
        finished: Mutex<Vec<Observed>>,
    }

    impl Watcher for Counting {
        fn accepted(&self) {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }

        fn greeted(&self, after: Duration) {
            self.greeted.lock().unwrap().push(after);
        }

        fn finished(&self, seen: &Observed) {
            self.finished.lock().unwrap().push(seen.clone());
        }
    }

    #[tokio::test]
    async fn a_listener_tells_its_watcher_of_the_accept_the_greeting_and_the_end() {
        let pki = TestPki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay = Duration::from_millis(20);
        let watcher = Arc::new(Counting::default());
        let behaviour = Behaviour { greeting_delay: delay, ..Behaviour::default() };
        let server = tokio::spawn(serve_listener(listener, behaviour, pki.acceptor(), watcher.clone()));
        let mut client = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let mut line = String::new();
        client.read_line(&mut line).await.unwrap();
        client.get_mut().write_all(b"QUIT\r\n").await.unwrap();
        line.clear();
        client.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("221 "), "{line:?}");
        for _ in 0..200 {
            if !watcher.finished.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.abort();
        assert_eq!(watcher.accepted.load(Ordering::Relaxed), 1);
        let greeted = watcher.greeted.lock().unwrap().clone();
        assert!(greeted.len() == 1 && greeted[0] >= delay, "{greeted:?}");
        let finished = watcher.finished.lock().unwrap().clone();
        assert_eq!(finished.len(), 1);
        assert_eq!((finished[0].lines.clone(), finished[0].failure.clone()), (vec!["QUIT".to_owned()], None));
    }
}
