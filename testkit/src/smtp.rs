//! A scriptable fake SMTP server for tests, on 127.0.0.1:0 or over any in-memory stream.
//!
//! It speaks just enough SMTP for the probe (greeting, EHLO/HELO, STARTTLS, AUTH PLAIN and
//! LOGIN, QUIT, RSET/NOOP) and lets a test bend each step: delay or break the greeting,
//! withhold STARTTLS, inject bytes after STARTTLS, reject AUTH. It records what the client
//! sent and what the server measured, so tests can check both sides.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestPki;

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
    /// Wait this long after accept before the greeting.
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
    pub greeting_sent_after: Option<Duration>,
    /// Whether the session was inside TLS when AUTH arrived.
    pub auth_over_tls: Option<bool>,
}

/// A running fake server on 127.0.0.1.
pub struct FakeSmtp {
    pub addr: SocketAddr,
    observed: Arc<Mutex<Vec<Observed>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSmtp {
    /// Starts a server that treats every connection with `behaviour`.
    pub async fn start(behaviour: Behaviour, pki: &TestPki) -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake smtp");
        let addr = listener.local_addr().unwrap();
        let observed = Arc::new(Mutex::new(Vec::new()));
        let acceptor = pki.acceptor();
        let obs = observed.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let behaviour = behaviour.clone();
                let acceptor = acceptor.clone();
                let obs = obs.clone();
                tokio::spawn(async move {
                    let seen = serve(tcp, behaviour, acceptor).await;
                    obs.lock().unwrap().push(seen);
                });
            }
        });
        FakeSmtp { addr, observed, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What the server saw, one entry per finished connection.
    pub fn observed(&self) -> Vec<Observed> {
        self.observed.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` connections have finished, then returns them.
    pub async fn wait_for_connections(&self, n: usize) -> Vec<Observed> {
        for _ in 0..200 {
            let seen = self.observed();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fake server saw {} connections, wanted {n}", self.observed().len());
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Serves one connection on any stream. Public so tests can run it over `duplex`.
pub async fn serve<S>(stream: S, b: Behaviour, acceptor: TlsAcceptor) -> Observed
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepted = Instant::now();
    let mut seen = Observed::default();
    let mut stream: Box<dyn Io> = Box::new(stream);
    let mut tls = false;
    if b.tls_protocol_version_alert {
        let mut hello = [0u8; 512];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut hello).await;
        // A TLS 1.0 record carrying a fatal alert, protocol_version (70).
        let _ = stream.write_all(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]).await;
        return seen;
    }
    if b.implicit_tls {
        match acceptor.accept(stream).await {
            Ok(s) => stream = Box::new(s),
            Err(_) => return seen,
        }
        tls = true;
    }
    tokio::time::sleep(b.greeting_delay).await;
    if stream.write_all(&b.greeting).await.is_err() {
        return seen;
    }
    let _ = stream.flush().await;
    if !b.greeting_rest.is_empty() {
        tokio::time::sleep(b.greeting_split_delay).await;
        // A client that did not wait for the whole greeting has written by now.
        let mut probe = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(
            Duration::from_millis(1),
            tokio::io::AsyncReadExt::read(&mut stream, &mut probe),
        )
        .await
        {
            seen.early_bytes = n > 0;
        }
        if stream.write_all(&b.greeting_rest).await.is_err() {
            return seen;
        }
        let _ = stream.flush().await;
    }
    seen.greeting_sent_after = Some(accepted.elapsed());
    if b.close_after_greeting {
        return seen;
    }

    let eol = if b.bare_lf { "\n" } else { "\r\n" };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return seen,
        }
        let line = line.trim_end().to_owned();
        seen.lines.push(line.clone());
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_owned();
        let reply: String = match verb.as_str() {
            "EHLO" => match &b.ehlo_reply_override {
                Some(r) => format!("{r}{eol}"),
                None => {
                    let mut caps = vec![
                        "fake.example.test greets you".to_owned(),
                        "PIPELINING".into(),
                        "SIZE 10240000".into(),
                    ];
                    if b.starttls && !tls && !b.implicit_tls {
                        caps.push("STARTTLS".into());
                    }
                    if !b.auth_mechanisms.is_empty() && (tls || b.auth_before_tls) {
                        caps.push(format!("AUTH {}", b.auth_mechanisms.join(" ")));
                    }
                    caps.push("8BITMIME".into());
                    let n = caps.len();
                    caps.iter()
                        .enumerate()
                        .map(|(i, c)| format!("250{}{c}{eol}", if i + 1 == n { ' ' } else { '-' }))
                        .collect()
                }
            },
            "HELO" => format!("250 fake.example.test{eol}"),
            "STARTTLS" if b.starttls && !tls && b.starttls_reply_override.is_some() => {
                format!("{}{eol}", b.starttls_reply_override.clone().unwrap_or_default())
            }
            "STARTTLS" if b.starttls && !tls => {
                let mut inner = reader.into_inner();
                let mut out = format!("220 2.0.0 Ready to start TLS{eol}").into_bytes();
                out.extend_from_slice(&b.starttls_injection);
                if inner.write_all(&out).await.is_err() {
                    return seen;
                }
                let _ = inner.flush().await;
                match acceptor.accept(inner).await {
                    Ok(s) => reader = BufReader::new(Box::new(s) as Box<dyn Io>),
                    Err(_) => return seen,
                }
                tls = true;
                continue;
            }
            "AUTH" => {
                seen.auth_over_tls = Some(tls);
                let ok = match upper.split_whitespace().nth(1) {
                    Some("PLAIN") => {
                        let payload = line.split_whitespace().nth(2).unwrap_or("");
                        let expected = B64.encode(format!("\0{}\0{}", b.username, b.password));
                        payload == expected
                    }
                    Some("LOGIN") => {
                        let mut ok = true;
                        for (prompt, want) in [("VXNlcm5hbWU6", &b.username), ("UGFzc3dvcmQ6", &b.password)] {
                            let w = reader.get_mut();
                            if w.write_all(format!("334 {prompt}{eol}").as_bytes()).await.is_err() {
                                return seen;
                            }
                            let mut answer = String::new();
                            if reader.read_line(&mut answer).await.unwrap_or(0) == 0 {
                                return seen;
                            }
                            seen.lines.push(answer.trim_end().to_owned());
                            ok &= answer.trim_end() == B64.encode(want.as_bytes());
                        }
                        ok
                    }
                    Some("CRAM-MD5") => {
                        let challenge = "<12345.67890@fake.example.test>";
                        let w = reader.get_mut();
                        if w.write_all(format!("334 {}{eol}", B64.encode(challenge)).as_bytes())
                            .await
                            .is_err()
                        {
                            return seen;
                        }
                        let mut answer = String::new();
                        if reader.read_line(&mut answer).await.unwrap_or(0) == 0 {
                            return seen;
                        }
                        seen.lines.push(answer.trim_end().to_owned());
                        let decoded = String::from_utf8(B64.decode(answer.trim_end()).unwrap_or_default())
                            .unwrap_or_default();
                        use hmac::{KeyInit, Mac};
                        let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(b.password.as_bytes()).unwrap();
                        mac.update(challenge.as_bytes());
                        let digest: String =
                            mac.finalize().into_bytes().iter().map(|x| format!("{x:02x}")).collect();
                        decoded == format!("{} {digest}", b.username)
                    }
                    Some("XOAUTH2") => {
                        let payload = line.split_whitespace().nth(2).unwrap_or("");
                        let token = b.xoauth2_token.lock().unwrap().clone();
                        let expected =
                            B64.encode(format!("user={}\x01auth=Bearer {token}\x01\x01", b.username));
                        if payload != expected {
                            // The RFC 7628-style error challenge, then the final reply.
                            let err = B64.encode(r#"{"status":"401","schemes":"bearer"}"#);
                            let w = reader.get_mut();
                            if w.write_all(format!("334 {err}{eol}").as_bytes()).await.is_err() {
                                return seen;
                            }
                            let mut empty = String::new();
                            if reader.read_line(&mut empty).await.unwrap_or(0) == 0 {
                                return seen;
                            }
                            seen.lines.push(empty.trim_end().to_owned());
                        }
                        payload == expected
                    }
                    _ => {
                        let w = reader.get_mut();
                        let _ =
                            w.write_all(format!("504 5.5.4 unrecognized mechanism{eol}").as_bytes()).await;
                        continue;
                    }
                };
                match &b.auth_reply_override {
                    Some(r) => format!("{r}{eol}"),
                    None if ok => format!("235 2.7.0 Authentication successful{eol}"),
                    None => format!("535 5.7.8 Error: authentication failed{eol}"),
                }
            }
            "QUIT" => {
                let w = reader.get_mut();
                let _ = w.write_all(format!("221 2.0.0 Bye{eol}").as_bytes()).await;
                let _ = w.flush().await;
                let _ = w.shutdown().await;
                return seen;
            }
            "NOOP" | "RSET" => format!("250 2.0.0 Ok{eol}"),
            _ => format!("502 5.5.2 command not recognized{eol}"),
        };
        let w = reader.get_mut();
        if w.write_all(reply.as_bytes()).await.is_err() || w.flush().await.is_err() {
            return seen;
        }
    }
}
