//! The IMAP side of a delivery probe: connect (implicit TLS or STARTTLS, with the module's
//! TLS rules), log in, find the junk folder, wait for the probe's token, read the header,
//! delete the message and sweep leftovers of earlier probes.
//!
//! Called by the probe walk (`probe::mod`), which times each step as a phase. The client
//! is async-imap, a maintained crate; under it, [`Wire`] bounds the bytes a server may send
//! in one probe. Only messages carrying the probe's token header are ever read, flagged or
//! expunged (`UID EXPUNGE`, so other messages marked `\Deleted` are left alone).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_imap::imap_proto::{Capability, MailboxDatum, NameAttribute, Response, Status};
use async_imap::{Client, Session};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

use super::headers::{token_of, TOKEN_HEADER};
use super::message::made_at;
use super::Folder;
use crate::config::{Imap, ProbeSpec, Transport};
use crate::probe::{Reason, StepError, Stream};
use crate::tls;

/// The most bytes an IMAP server may send in one probe: a header, a folder list and a few
/// searches take some kilobytes. It also bounds the CPU a hostile server can cost: the
/// client parses a line again as each piece of it arrives.
const MAX_READ_BYTES: usize = 1 << 20;
/// The most folders searched for the message (LIST answers beyond are ignored).
const MAX_FOLDERS: usize = 100;
/// The most leftover candidates examined per folder and probe (their headers are read);
/// more are left for the next probes.
const MAX_SWEEP: usize = 20;
/// The longest line read before STARTTLS.
const MAX_LINE: u64 = 4096;

/// The next response of `session` (async-imap's response type cannot be named outside
/// it, hence a macro); the end of the connection is `closed`, a socket error `io_error`.
macro_rules! next_response {
    ($session:expr, $what:expr) => {
        $session.read_response().await.map_err(|e| io_error($what, &e))?.ok_or_else(|| {
            StepError::new(Reason::Closed, format!("{}: the IMAP server closed the connection", $what))
        })?
    };
}

/// A NO, BAD or BYE as the answer to `what`: `imap_protocol`, with the server's words.
fn refused(what: &str, status: &Status, text: Option<&str>) -> StepError {
    StepError::new(
        Reason::ImapProtocol,
        format!("{what}: {} {}", status_word(status), crate::probe::truncate(text.unwrap_or(""))),
    )
}

/// The stream under the IMAP client: TCP or TLS, failing once the server has sent more
/// than [`MAX_READ_BYTES`].
pub struct Wire {
    inner: Box<dyn Stream>,
    left: usize,
}

impl Wire {
    fn new(inner: Box<dyn Stream>) -> Wire {
        Wire::bounded(inner, MAX_READ_BYTES)
    }

    fn bounded(inner: Box<dyn Stream>, limit: usize) -> Wire {
        Wire { inner, left: limit }
    }
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire").field("left", &self.left).finish()
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the IMAP server sent more than {} MiB", MAX_READ_BYTES >> 20),
            )));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.left = self.left.saturating_sub(read);
        poll
    }
}

impl AsyncWrite for Wire {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connected, greeted IMAP client, not yet logged in.
pub struct Connected {
    client: Client<Wire>,
    /// Where it connected, and the TLS verdict in one line, for the transcript.
    pub peer: SocketAddr,
    pub tls: String,
}

/// A logged-in session on the mailbox, with INBOX selected between steps.
pub struct Mailbox {
    /// `None` only while IDLE holds it, or after a failure left it unusable.
    session: Option<Session<Wire>>,
    idle: bool,
    uidplus: bool,
    /// The junk folder: configured, or the one marked `\Junk`.
    junk: Option<String>,
    /// Other selectable folders, searched too so that mail filed elsewhere is `other`.
    others: Vec<String>,
    /// The folder selected now.
    selected: String,
}

/// Where the message was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub folder: Folder,
    pub name: String,
    pub uid: u32,
}

/// An error of async-imap where only a command was written (every answer is read by
/// [`Mailbox::command`] and the IDLE reader): a socket error by its kind, anything else
/// without its text, which could quote the command.
fn imap_error(what: &str, e: async_imap::error::Error) -> StepError {
    match e {
        async_imap::error::Error::Io(e) => io_error(what, &e),
        _ => StepError::new(
            Reason::ImapProtocol,
            format!("{what}: the IMAP server's answer could not be read"),
        ),
    }
}

/// A socket error in an open IMAP session: past the read bound it is `imap_protocol`; an
/// end of the session (async-imap reports some as "refused", with no text) is `closed`.
fn io_error(what: &str, e: &io::Error) -> StepError {
    use io::ErrorKind as K;
    let (reason, text) = match e.kind() {
        K::InvalidData => (Reason::ImapProtocol, e.to_string()),
        K::UnexpectedEof | K::ConnectionRefused | K::ConnectionAborted => {
            (Reason::Closed, "the IMAP server closed the connection".to_owned())
        }
        _ => (Reason::from_io(e), e.to_string()),
    };
    StepError::new(reason, format!("{what}: {text}"))
}

/// The UID and the header of a FETCH response that carries `BODY[HEADER]`.
fn fetched_header<'r>(response: &'r Response<'_>) -> Option<(Option<u32>, &'r [u8])> {
    use async_imap::imap_proto::{AttributeValue, MessageSection, SectionPath};
    let Response::Fetch(_, attributes) = response else { return None };
    let mut uid = None;
    let mut header = None;
    for attribute in attributes {
        match attribute {
            AttributeValue::Uid(u) => uid = Some(*u),
            AttributeValue::BodySection {
                section: Some(SectionPath::Full(MessageSection::Header)),
                data: Some(data),
                ..
            } => header = Some(data.as_ref()),
            _ => {}
        }
    }
    header.map(|h| (uid, h))
}

/// A mailbox name as an IMAP quoted string.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The word of a tagged status, as the server wrote it.
fn status_word(status: &Status) -> &'static str {
    match status {
        Status::Ok => "OK",
        Status::No => "NO",
        Status::Bad => "BAD",
        Status::PreAuth => "PREAUTH",
        Status::Bye => "BYE",
    }
}

/// The server's text of a NO or BAD, which async-imap gives in Debug form
/// (`code: None, info: Some("text")`, or `outcome: Outcome { .., information: Some("text") }`):
/// the text, bounded.
fn server_text(error: &str) -> String {
    let text = match error.split_once("info: Some(\"").or_else(|| error.split_once("information: Some(\"")) {
        Some((_, rest)) => rest.rsplit_once("\")").map_or(rest, |(text, _)| text),
        None => error,
    };
    crate::probe::truncate(text)
}

/// Connects to the mailbox's server: resolve (the spec's resolver), TCP, then TLS from the
/// first byte or after STARTTLS, and the greeting. A handshake or certificate failure is
/// `imap_tls`.
pub async fn connect(spec: &ProbeSpec, imap: &Imap) -> Result<Connected, StepError> {
    let host = imap.host.as_deref().unwrap_or(&spec.host);
    let ip = spec.resolver.first_address(host, spec.module.ip_protocol.family()).await.map_err(|e| {
        StepError::new(Reason::from_dns(e.failure), format!("resolving IMAP host {}", e.detail))
    })?;
    let peer = SocketAddr::new(ip, imap.port);
    let tcp = TcpStream::connect(peer)
        .await
        .map_err(|e| StepError::new(Reason::from_io(&e), format!("IMAP connect to {peer}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let transport =
        imap.transport.for_host(host).map_err(|e| StepError::new(Reason::ImapTls, e.to_string()))?;
    let tls = match &transport {
        Transport::Starttls { tls, .. } | Transport::Implicit { tls } => tls,
        Transport::Plain => return Err(StepError::new(Reason::ImapTls, "IMAP without TLS is not supported")),
    };
    let stream: Box<dyn Stream> = match transport {
        Transport::Implicit { .. } => Box::new(tcp),
        _ => Box::new(starttls(tcp).await?),
    };
    let (stream, info) = tls::handshake(&tls.settings, tls.name.clone(), None, stream)
        .await
        .map_err(|e| StepError::new(Reason::ImapTls, format!("IMAP TLS handshake: {}", e.detail)))?;
    let verdict = match (&info.cert_error, &info.cert_error_detail) {
        (None, _) => "verified".to_owned(),
        (Some(e), detail) => format!("NOT verified, {}: {}", e.as_str(), detail.as_deref().unwrap_or("")),
    };
    if let (Some(error), true) = (info.cert_error, tls.settings.fail_on_invalid_cert) {
        return Err(StepError::new(
            Reason::ImapTls,
            format!(
                "IMAP certificate {}: {}",
                error.as_str(),
                info.cert_error_detail.as_deref().unwrap_or("")
            ),
        ));
    }
    let mut client = Client::new(Wire::new(Box::new(stream)));
    if matches!(imap.transport, Transport::Implicit { .. }) {
        greeting(&mut client).await?;
    }
    Ok(Connected {
        client,
        peer,
        tls: format!("IMAP TLS {} {}; certificate {verdict}", info.version, info.cipher),
    })
}

/// Reads the greeting of an implicit-TLS server: `* OK`.
async fn greeting(client: &mut Client<Wire>) -> Result<(), StepError> {
    use async_imap::imap_proto::{Response, Status};
    let response = client
        .read_response()
        .await
        .map_err(|e| imap_error("IMAP greeting", async_imap::error::Error::Io(e)))?
        .ok_or_else(|| StepError::new(Reason::Closed, "IMAP greeting: connection closed"))?;
    match response.parsed() {
        Response::Data { status: Status::Ok, .. } => Ok(()),
        _ => Err(StepError::new(Reason::ImapProtocol, "IMAP greeting: not * OK")),
    }
}

/// The plain part of an IMAP STARTTLS (RFC 2595): the greeting, `STARTTLS`, its `OK`.
async fn starttls(tcp: TcpStream) -> Result<TcpStream, StepError> {
    let mut reader = BufReader::new(tcp);
    let greeting = read_line(&mut reader).await?;
    if !greeting.starts_with("* OK") {
        return Err(StepError::new(
            Reason::ImapProtocol,
            format!("IMAP greeting: {}", crate::probe::truncate(&greeting)),
        ));
    }
    reader
        .get_mut()
        .write_all(b"s0 STARTTLS\r\n")
        .await
        .map_err(|e| StepError::new(Reason::from_io(&e), e.to_string()))?;
    loop {
        let line = read_line(&mut reader).await?;
        if let Some(status) = line.strip_prefix("s0 ") {
            if !status.starts_with("OK") {
                return Err(StepError::new(
                    Reason::ImapTls,
                    format!("STARTTLS refused: {}", crate::probe::truncate(status)),
                ));
            }
            break;
        }
    }
    if !reader.buffer().is_empty() {
        return Err(StepError::new(Reason::ImapTls, "bytes after the OK to STARTTLS, before the handshake"));
    }
    Ok(reader.into_inner())
}

async fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String, StepError> {
    let mut line = Vec::new();
    let n = (&mut *reader).take(MAX_LINE).read_until(b'\n', &mut line).await;
    match n {
        Ok(0) => Err(StepError::new(Reason::Closed, "the IMAP server closed the connection")),
        Ok(_) if !line.ends_with(b"\n") => Err(StepError::new(Reason::ImapProtocol, "an IMAP line too long")),
        Ok(_) => Ok(String::from_utf8_lossy(&line).trim_end().to_owned()),
        Err(e) => Err(StepError::new(Reason::from_io(&e), e.to_string())),
    }
}

impl Connected {
    /// LOGIN, then the capabilities, the folder list (the junk folder by `\Junk` unless
    /// configured) and SELECT INBOX. A refused LOGIN is `imap_auth_failed`.
    pub async fn login(self, imap: &Imap) -> Result<Mailbox, StepError> {
        let session = match self.client.login(&imap.username, imap.password.expose()).await {
            Ok(session) => session,
            Err((async_imap::error::Error::No(text), _)) => {
                let text = server_text(&text);
                // RFC 5530: a refusal for another reason than the credentials (too many
                // connections, the server unavailable) is not the mailbox's password.
                let other = ["[LIMIT]", "[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[CONTACTADMIN]"];
                let reason = if other.iter().any(|code| text.starts_with(code)) {
                    Reason::ImapProtocol
                } else {
                    Reason::ImapAuthFailed
                };
                return Err(StepError::new(reason, format!("LOGIN as {:?} refused: {text}", imap.username)));
            }
            // Never the error's own text: it could quote the command.
            Err((async_imap::error::Error::Io(e), _)) => {
                return Err(StepError::new(Reason::from_io(&e), format!("LOGIN: {}", e.kind())))
            }
            Err(_) => return Err(StepError::new(Reason::ImapProtocol, "LOGIN: unexpected answer")),
        };
        let mut mailbox = Mailbox {
            session: Some(session),
            idle: false,
            uidplus: false,
            junk: imap.junk_mailbox.clone(),
            others: Vec::new(),
            selected: String::new(),
        };
        let mut capabilities = Vec::new();
        mailbox
            .command("CAPABILITY", |response| {
                if let Response::Capabilities(caps) = response {
                    capabilities.extend(caps.iter().map(|c| match c {
                        Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
                        Capability::Auth(a) => format!("AUTH={}", a.to_ascii_uppercase()),
                        Capability::Atom(a) => a.to_ascii_uppercase(),
                    }));
                }
            })
            .await?;
        mailbox.idle = capabilities.iter().any(|c| c == "IDLE");
        mailbox.uidplus = capabilities.iter().any(|c| c == "UIDPLUS");
        // The whole answer is read (the read bound caps it), and the first folders used.
        let mut others = Vec::new();
        let mut junk = None;
        mailbox
            .command("LIST \"\" *", |response| {
                let Response::MailboxData(MailboxDatum::List(list)) = response else { return };
                let attributes = &list.name_attributes;
                if others.len() >= MAX_FOLDERS
                    || attributes.contains(&NameAttribute::NoSelect)
                    || list.name.eq_ignore_ascii_case("INBOX")
                {
                    return;
                }
                if junk.is_none() && attributes.contains(&NameAttribute::Junk) {
                    junk = Some(list.name.to_string());
                } else {
                    others.push(list.name.to_string());
                }
            })
            .await?;
        if mailbox.junk.is_none() {
            mailbox.junk = junk;
        }
        others.retain(|o| Some(o) != mailbox.junk.as_ref());
        mailbox.others = others;
        mailbox.open("INBOX", true).await?;
        Ok(mailbox)
    }
}

impl Mailbox {
    fn session(&mut self) -> Result<&mut Session<Wire>, StepError> {
        self.session.as_mut().ok_or_else(|| StepError::new(Reason::ImapProtocol, "the IMAP session was lost"))
    }

    /// What the transcript says about the mailbox after login.
    pub fn describe(&self) -> String {
        format!(
            "IMAP logged in; IDLE {}; junk folder {}; {} other folders",
            if self.idle { "offered" } else { "not offered" },
            self.junk.as_deref().unwrap_or("none"),
            self.others.len()
        )
    }

    /// Selects `name` read-write (`EXAMINE`, read-only, when only searching).
    async fn open(&mut self, name: &str, write: bool) -> Result<(), StepError> {
        if self.selected == name && write {
            return Ok(());
        }
        let verb = if write { "SELECT" } else { "EXAMINE" };
        self.command(&format!("{verb} {}", quote(name)), |_| {}).await.map_err(|e| StepError {
            detail: e.detail.replacen(&format!("{verb} {}", quote(name)), &format!("SELECT {name}"), 1),
            ..e
        })?;
        self.selected = if write { name.to_owned() } else { String::new() };
        Ok(())
    }

    /// `UID SEARCH query`, with its tagged answer checked: async-imap's own `uid_search`
    /// takes a NO or BAD for an empty result, which would turn a refused search into a
    /// wait until `not_delivered`.
    async fn search(&mut self, query: &str) -> Result<Vec<u32>, StepError> {
        let mut uids = Vec::new();
        self.command(&format!("UID SEARCH {query}"), |response| {
            if let Response::MailboxData(MailboxDatum::Search(found)) = response {
                uids.extend(found.iter().copied());
            }
        })
        .await?;
        uids.sort_unstable();
        Ok(uids)
    }

    /// Sends `command` and reads its answer up to the tagged status, which must be OK; the
    /// untagged responses go to `each`. async-imap's own methods take the end of the
    /// connection, and some a NO, for an empty answer: a SELECT that failed would pass, a
    /// refused SEARCH would find nothing. Errors name the command's first two words.
    async fn command(&mut self, command: &str, mut each: impl FnMut(&Response<'_>)) -> Result<(), StepError> {
        let what: String = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let session = self.session()?;
        let tag = session.run_command(command).await.map_err(|e| imap_error(&what, e))?;
        loop {
            let response = next_response!(session, &what);
            match response.parsed() {
                Response::Done { tag: done, status, outcome } if *done == tag => {
                    if *status != Status::Ok {
                        return Err(refused(&what, status, outcome.information.as_deref()));
                    }
                    return Ok(());
                }
                untagged => each(untagged),
            }
        }
    }

    /// Waits until a message with `token` is in some folder: INBOX first (woken by IDLE
    /// where offered), then the junk folder, then the others, every `poll` at least.
    /// Returns when found; the caller's deadline ends the wait.
    pub async fn wait_for(&mut self, token: &str, poll: Duration) -> Result<Found, StepError> {
        let query = format!("HEADER {TOKEN_HEADER} \"{token}\"");
        let inbox = |uid| Found { folder: Folder::Inbox, name: "INBOX".into(), uid };
        let folders: Vec<(Folder, String)> = self
            .junk
            .iter()
            .map(|j| (Folder::Junk, j.clone()))
            .chain(self.others.iter().map(|o| (Folder::Other, o.clone())))
            .collect();
        self.open("INBOX", true).await?;
        loop {
            if let Some(&uid) = self.search(&query).await?.first() {
                return Ok(inbox(uid));
            }
            for (folder, name) in &folders {
                self.open(name, false).await?;
                if let Some(&uid) = self.search(&query).await?.first() {
                    return Ok(Found { folder: *folder, name: name.clone(), uid });
                }
            }
            if !folders.is_empty() {
                // Back in INBOX: what arrived while the others were searched is in the
                // SELECT's view already, so IDLE would not tell of it; search once more.
                self.open("INBOX", true).await?;
                if let Some(&uid) = self.search(&query).await?.first() {
                    return Ok(inbox(uid));
                }
            }
            self.pause(poll).await?;
        }
    }

    /// Waits `poll`, or less when IDLE says INBOX changed.
    async fn pause(&mut self, poll: Duration) -> Result<(), StepError> {
        if !self.idle {
            tokio::time::sleep(poll).await;
            return Ok(());
        }
        // IDLE by hand (RFC 2177): async-imap's own waits for ever on a NO to IDLE.
        let session = self.session()?;
        let tag = session.run_command("IDLE").await.map_err(|e| imap_error("IDLE", e))?;
        loop {
            let response = next_response!(session, "IDLE");
            match response.parsed() {
                Response::Continue { .. } => break,
                Response::Done { tag: done, status, outcome } if *done == tag => {
                    return Err(refused("IDLE", status, outcome.information.as_deref()));
                }
                _ => {}
            }
        }
        // Any news of the mailbox ends the wait early; the poll bounds it.
        let news = tokio::time::timeout(poll, async {
            loop {
                let response = next_response!(session, "IDLE");
                if let Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_)) =
                    response.parsed()
                {
                    return Ok::<(), StepError>(());
                }
            }
        })
        .await;
        if let Ok(Err(e)) = news {
            return Err(e);
        }
        session.run_command_untagged("DONE").await.map_err(|e| imap_error("DONE", e))?;
        loop {
            let response = next_response!(session, "DONE");
            if let Response::Done { tag: done, status, outcome } = response.parsed() {
                if *done == tag {
                    return match status {
                        Status::Ok => Ok(()),
                        _ => Err(refused("IDLE", status, outcome.information.as_deref())),
                    };
                }
            }
        }
    }

    /// The header of the message found, read without setting `\Seen`.
    pub async fn header(&mut self, found: &Found) -> Result<Vec<u8>, StepError> {
        self.open(&found.name, true).await?;
        let mut header = None;
        self.command(&format!("UID FETCH {} (UID BODY.PEEK[HEADER])", found.uid), |response| {
            if let Some((uid, h)) = fetched_header(response) {
                if uid == Some(found.uid) {
                    header = Some(h.to_vec());
                }
            }
        })
        .await?;
        header.ok_or_else(|| StepError::new(Reason::ImapProtocol, "UID FETCH: no header in the answer"))
    }

    /// Deletes the message found, then sweeps the probe messages older than `sweep_after`
    /// from INBOX, the junk folder and the folder it was found in. Returns how many
    /// leftovers it deleted.
    pub async fn clean_up(&mut self, found: &Found, sweep_after: Duration) -> Result<u32, StepError> {
        self.delete(&found.name, &[found.uid]).await?;
        let mut folders = vec!["INBOX".to_owned()];
        folders.extend(self.junk.clone());
        if !folders.contains(&found.name) {
            folders.push(found.name.clone());
        }
        let mut swept = 0;
        for folder in folders {
            swept += self.sweep(&folder, sweep_after).await?;
        }
        self.open("INBOX", true).await?;
        Ok(swept)
    }

    /// Deletes the probe messages of `folder` whose token is older than `sweep_after`.
    async fn sweep(&mut self, folder: &str, sweep_after: Duration) -> Result<u32, StepError> {
        self.open(folder, true).await?;
        let candidates = self.search(&format!("HEADER {TOKEN_HEADER} \"\"")).await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let set: Vec<String> = candidates.iter().take(MAX_SWEEP).map(u32::to_string).collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut stale: Vec<u32> = Vec::new();
        self.command(&format!("UID FETCH {} (UID BODY.PEEK[HEADER])", set.join(",")), |response| {
            let Some((Some(uid), header)) = fetched_header(response) else { return };
            let made = token_of(header).as_deref().and_then(made_at);
            if made.is_some_and(|made| now.saturating_sub(made) >= sweep_after.as_secs()) {
                stale.push(uid);
            }
        })
        .await?;
        if !stale.is_empty() {
            self.delete(folder, &stale).await?;
        }
        Ok(u32::try_from(stale.len()).unwrap_or(u32::MAX))
    }

    /// Flags `uids` of `folder` `\Deleted` and expunges exactly those (UIDPLUS).
    async fn delete(&mut self, folder: &str, uids: &[u32]) -> Result<(), StepError> {
        if !self.uidplus {
            return Err(StepError::new(
                Reason::ImapProtocol,
                "the IMAP server lacks UIDPLUS: the probe message cannot be expunged alone (EXPUNGE would also remove other messages marked \\Deleted)",
            ));
        }
        self.open(folder, true).await?;
        let set: Vec<String> = uids.iter().map(u32::to_string).collect();
        let set = set.join(",");
        // Through `command`, so that the tagged answer is checked: async-imap's `uid_store`
        // and `uid_expunge` streams end at it without looking, so a NO (no right to delete)
        // would pass for a deletion.
        self.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"), |_| {}).await?;
        self.command(&format!("UID EXPUNGE {set}"), |_| {}).await?;
        Ok(())
    }

    /// LOGOUT, bounded by the caller.
    pub async fn logout(mut self) {
        if let Some(session) = self.session.as_mut() {
            let _ = session.logout().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read bound counts the bytes each read adds, not what the buffer held before,
    /// and fails the read after the last allowed byte.
    #[tokio::test]
    async fn the_read_bound_counts_new_bytes_only() {
        use tokio::io::AsyncWriteExt as _;
        let (client, mut server) = tokio::io::duplex(64);
        let mut wire = Wire::bounded(Box::new(client), 20);
        let poll = |wire: &mut Wire, buf: &mut ReadBuf<'_>| {
            let waker = std::task::Waker::noop();
            Pin::new(wire).poll_read(&mut Context::from_waker(waker), buf)
        };
        // Six bytes were in the buffer already; only the four read now count.
        server.write_all(b"0123").await.unwrap();
        let mut storage = [0u8; 16];
        let mut buf = ReadBuf::new(&mut storage);
        buf.advance(6);
        assert!(matches!(poll(&mut wire, &mut buf), Poll::Ready(Ok(()))));
        assert_eq!((buf.filled().len(), wire.left), (10, 16));
        // The sixteen left are allowed; the byte after them is not.
        server.write_all(&[b'x'; 17]).await.unwrap();
        let mut storage = [0u8; 16];
        let mut buf = ReadBuf::new(&mut storage);
        assert!(matches!(poll(&mut wire, &mut buf), Poll::Ready(Ok(()))));
        assert_eq!((buf.filled().len(), wire.left), (16, 0));
        let mut more = [0u8; 4];
        let mut next = ReadBuf::new(&mut more);
        match poll(&mut wire, &mut next) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            other => panic!("read past the bound: {other:?}"),
        }
    }

    #[test]
    fn the_servers_text_is_taken_out_of_async_imaps_wording() {
        let said = "code: None, info: Some(\"[LIMIT] Maximum number of connections from user+IP exceeded\")";
        assert_eq!(server_text(said), "[LIMIT] Maximum number of connections from user+IP exceeded");
        assert_eq!(server_text("plain words"), "plain words");
        let bad = "outcome: Outcome { code: None, information: Some(\"[CLIENTBUG] try again\") }";
        assert_eq!(server_text(bad), "[CLIENTBUG] try again");
    }
}
