//! A thin SMTP client session over any byte stream: send a command, read a whole reply.
//!
//! The probe walk (`probe::mod`) drives one `Session` per connection leg (plain, then TLS).
//! It is generic over `AsyncRead + AsyncWrite`, so tests run it over `tokio::io::duplex`
//! without sockets. It applies the byte bounds of `reply`; deadlines are the caller's job,
//! because the caller knows which phase a read belongs to.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::reply::{parse_reply, Reply, ReplyError, MAX_REPLY_BYTES};
use super::secrets::Secrets;
use super::transcript::{self, Dir, Recorder};
use crate::outcome::{truncate, Reason, StepError};

/// How much to ask the socket for at once.
const READ_CHUNK: usize = 4096;

/// An SMTP client conversation on one stream.
pub struct Session<S> {
    stream: S,
    /// Bytes received but not yet parsed into a reply. Bounded: `parse_reply` fails once
    /// it holds more than `MAX_REPLY_BYTES`, so it never exceeds that plus one chunk.
    buf: Vec<u8>,
    /// Reply lines so far that ended in a bare LF.
    pub bare_lf_lines: u32,
    /// Where every line goes, when the probe keeps a transcript.
    recorder: Option<Recorder>,
    /// The probe's secrets, to which AUTH adds what it derives.
    secrets: Secrets,
}

/// Why a reply could not be read.
#[derive(Debug)]
pub enum SessionError {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed the connection; `partial` says whether part of a reply had come.
    Closed { partial: bool },
    /// The bytes are not a valid reply.
    Reply(ReplyError),
}

impl From<SessionError> for StepError {
    fn from(err: SessionError) -> StepError {
        match err {
            SessionError::Io(e) => StepError::new(crate::sys::reason_of(&e), e.to_string()),
            SessionError::Closed { partial: true } => {
                StepError::new(Reason::Closed, "connection closed in the middle of a reply")
            }
            SessionError::Closed { partial: false } => {
                StepError::new(Reason::Closed, "connection closed while waiting for a reply")
            }
            SessionError::Reply(e) => StepError::new(Reason::Protocol, e.to_string()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Starts a session on a connected stream, without a transcript.
    #[cfg(test)]
    pub fn new(stream: S) -> Session<S> {
        Session::recorded(stream, None, Secrets::default())
    }

    /// Starts a session whose lines go to `recorder`, which hides `secrets`.
    pub fn recorded(stream: S, recorder: Option<Recorder>, secrets: Secrets) -> Session<S> {
        Session { stream, buf: Vec::with_capacity(512), bare_lf_lines: 0, recorder, secrets }
    }

    /// Registers strings no output of the probe may show (credentials, what AUTH derives
    /// from them), with their encodings.
    pub fn secrets(&self, secrets: &[&str]) {
        secrets.iter().for_each(|s| self.secrets.add(s));
    }

    /// Reads one complete reply, multi-line replies included.
    pub async fn read_reply(&mut self) -> Result<Reply, SessionError> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    self.bare_lf_lines += reply.bare_lf_lines;
                    if self.recorder.is_some() {
                        let last = reply.lines.len().saturating_sub(1);
                        for (i, line) in reply.lines.iter().enumerate() {
                            let sep = if i == last { ' ' } else { '-' };
                            transcript::note(
                                &self.recorder,
                                Dir::Received,
                                &format!("{}{sep}{line}", reply.code),
                            );
                        }
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(SessionError::Reply(e)),
            }
            debug_assert!(self.buf.len() <= MAX_REPLY_BYTES + READ_CHUNK);
            let start = self.buf.len();
            self.buf.resize(start + READ_CHUNK, 0);
            let read = self.stream.read(&mut self.buf[start..]).await;
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(SessionError::Io(e));
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                return Err(SessionError::Closed { partial: start > 0 });
            }
        }
    }

    /// Sends one command line (CRLF is added) without waiting for the reply.
    pub async fn send(&mut self, line: &str) -> Result<(), SessionError> {
        self.send_shown(line, line).await
    }

    /// Sends `line`, and writes `shown` in its place in the transcript (for a line that
    /// carries credentials).
    pub async fn send_shown(&mut self, line: &str, shown: &str) -> Result<(), SessionError> {
        transcript::note(&self.recorder, Dir::Sent, shown);
        let mut wire = Vec::with_capacity(line.len() + 2);
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(b"\r\n");
        self.stream.write_all(&wire).await.map_err(SessionError::Io)?;
        self.stream.flush().await.map_err(SessionError::Io)
    }

    /// Sends a message after DATA's 354: dot-stuffed, CRLF line ends as given, then the
    /// lone `.`; reads the reply. The transcript shows its size, not its text.
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, SessionError> {
        transcript::note(&self.recorder, Dir::Sent, &format!("(the message, {} bytes)", message.len()));
        transcript::note(&self.recorder, Dir::Sent, ".");
        let mut wire = Vec::with_capacity(message.len() + 16);
        let mut line_start = true;
        for &b in message {
            if line_start && b == b'.' {
                wire.push(b'.');
            }
            wire.push(b);
            line_start = b == b'\n';
        }
        if !line_start {
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        self.stream.write_all(&wire).await.map_err(SessionError::Io)?;
        self.stream.flush().await.map_err(SessionError::Io)?;
        self.read_reply().await
    }

    /// Sends a command and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, SessionError> {
        self.send(line).await?;
        self.read_reply().await
    }

    /// Sends a command that carries credentials (shown as `shown`) and reads its reply.
    pub async fn secret_command(&mut self, line: &str, shown: &str) -> Result<Reply, SessionError> {
        self.send_shown(line, shown).await?;
        self.read_reply().await
    }

    /// Sends a command and requires a reply with `expected` code; `what` names the command
    /// in the error. Any other reply is classified by `Reply::unexpected`.
    pub async fn expect(&mut self, line: &str, what: &str, expected: u16) -> Result<Reply, StepError> {
        let reply = self.command(line).await?;
        if reply.code == expected {
            Ok(reply)
        } else {
            Err(reply.unexpected(what))
        }
    }

    /// True when bytes beyond the last reply have already arrived.
    pub fn has_pending_bytes(&self) -> bool {
        !self.buf.is_empty()
    }

    /// A short printable excerpt of the unparsed bytes, for logs.
    pub fn pending_excerpt(&self) -> String {
        truncate(&String::from_utf8_lossy(&self.buf))
    }

    /// Ends the session and returns the stream, for the TLS upgrade.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Shuts the write side down, ignoring errors: the conversation is over either way.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn reads_a_reply_split_across_writes() {
        let (client, mut server) = duplex(64);
        let mut session = Session::new(client);
        let server_task = tokio::spawn(async move {
            server.write_all(b"220-mx.example.test ESMTP\r\n220-").await.unwrap();
            tokio::task::yield_now().await;
            server.write_all(b"second line\r\n220 last\r\n").await.unwrap();
            server
        });
        let reply = session.read_reply().await.unwrap();
        assert_eq!(reply.code, 220);
        assert_eq!(reply.lines, vec!["mx.example.test ESMTP", "second line", "last"]);
        drop(server_task.await.unwrap());
    }

    #[tokio::test]
    async fn command_writes_crlf_and_reads_reply() {
        let (client, mut server) = duplex(256);
        let mut session = Session::new(client);
        let server_task = tokio::spawn(async move {
            let mut got = [0u8; 12];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(b"250-mx\r\n250 SIZE 100\r\n").await.unwrap();
            (server, got)
        });
        let reply = session.command("EHLO probe").await.unwrap();
        let (_server, got) = server_task.await.unwrap();
        assert_eq!(&got, b"EHLO probe\r\n");
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, vec!["mx", "SIZE 100"]);
    }

    #[tokio::test]
    async fn close_mid_reply_is_reported_as_partial() {
        let (client, mut server) = duplex(64);
        let mut session = Session::new(client);
        server.write_all(b"220-first line\r\n220 unfini").await.unwrap();
        drop(server);
        match session.read_reply().await {
            Err(SessionError::Closed { partial: true }) => {}
            other => panic!("expected a partial close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn close_before_any_byte() {
        let (client, server) = duplex(64);
        let mut session = Session::new(client);
        drop(server);
        assert!(matches!(session.read_reply().await, Err(SessionError::Closed { partial: false })));
    }

    #[tokio::test]
    async fn endless_reply_is_cut_off_at_the_bound() {
        let (client, mut server) = duplex(8192);
        let mut session = Session::new(client);
        let writer = tokio::spawn(async move {
            // Far more than the bound; the session must stop reading long before the end.
            for _ in 0..10_000 {
                if server.write_all(b"250-more and more and more text\r\n").await.is_err() {
                    return;
                }
            }
        });
        let err = session.read_reply().await.unwrap_err();
        assert!(matches!(err, SessionError::Reply(ReplyError::ReplyTooLong)), "{err:?}");
        drop(session);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn leftover_bytes_are_visible() {
        let (client, mut server) = duplex(256);
        let mut session = Session::new(client);
        server.write_all(b"220 go ahead\r\nINJECTED").await.unwrap();
        let reply = session.read_reply().await.unwrap();
        assert_eq!(reply.code, 220);
        assert!(session.has_pending_bytes());
        assert_eq!(session.pending_excerpt(), "INJECTED");
    }

    /// Issue 17: a message goes out dot-stuffed, ended by CRLF only when it does not end
    /// with a line break already, then the lone dot; and `shutdown` closes the write side.
    #[tokio::test]
    async fn data_is_dot_stuffed_and_ended_once() {
        for (message, wire) in [
            (&b"a\r\n.b"[..], &b"a\r\n..b\r\n.\r\n"[..]),
            (b".x\r\n", b"..x\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
        ] {
            let (client, mut server) = duplex(1024);
            let mut session = Session::new(client);
            server.write_all(b"250 queued\r\n").await.unwrap();
            assert_eq!(session.data(message).await.unwrap().code, 250);
            session.shutdown().await;
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, wire, "{:?}", String::from_utf8_lossy(message));
        }
    }
}
