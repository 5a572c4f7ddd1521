//! The IMAP side of a delivery probe: connect (implicit TLS or STARTTLS, with the module's
//! TLS rules), log in, find the junk folder, wait for the probe's token, read the header,
//! delete the message and sweep leftovers of earlier probes.
//!
//! Called by the probe walk (`probe::mod`), which times each step as a phase. The client
//! is async-imap, a maintained crate; under it, [`Wire`] bounds the bytes a server may send
//! in one probe. Only messages carrying the probe's token header are ever read, flagged or
//! expunged (`UID EXPUNGE`, so other messages marked `\Deleted` are left alone).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_imap::imap_proto::{Capability, MailboxDatum, NameAttribute, Response, Status};
use async_imap::{Client, Session};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::headers::{token_of, TOKEN_HEADER};
use super::message::made_at;
use super::wire::Wire;
use super::Folder;
use crate::config::{Imap, ProbeSpec, Transport};
use crate::probe::{Reason, StepError, Stream};
use crate::tls;

/// The most folders searched for the message (LIST answers beyond are ignored).
const MAX_FOLDERS: usize = 100;
/// The most leftover candidates examined per folder and probe (their headers are read);
/// more are left for the next probes. Also the most UIDs a search for the probe's own
/// token may name.
const MAX_SWEEP: usize = 20;
/// The longest line read before STARTTLS.
const MAX_LINE: u64 = 4096;
/// The longest excerpt of an unparseable answer shown in a failure.
const MAX_EXCERPT: usize = 80;

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
    /// How long a command's answer may take.
    answer_wait: Duration,
    /// The command sent and not yet answered: what a probe cut off by its deadline was
    /// waiting for, if anything.
    waiting: Option<String>,
    /// Folders the server listed that could not be searched, with why.
    skipped: Vec<(String, String)>,
}

/// Where a search for the probe's token pointed: the folder and the UIDs the server named.
/// Not proof: [`Mailbox::header`] reads the headers and keeps only the message that
/// carries the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub folder: Folder,
    pub name: String,
    /// The UIDs the search named (at most [`MAX_SWEEP`]); once the header was read, the
    /// one message that carries the token.
    pub uids: Vec<u32>,
}

/// The answer to a command: its tagged OK, or a refusal (NO, BAD) after which the session
/// goes on. Anything that leaves the session unusable is the outer error.
type Answer = Result<(), StepError>;

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

/// An error reading an open IMAP session. What the server sent is `imap_protocol`: past a
/// bound of the [`Wire`] (`InvalidData`, in its words), or what async-imap could not parse
/// or would not buffer (its own errors, which carry no OS error code; an excerpt of the
/// answer is kept, never the whole). An end of the session (async-imap reports some as
/// "refused", with no text) is `closed`; any other socket error is classified by its code.
fn io_error(what: &str, e: &io::Error) -> StepError {
    use io::ErrorKind as K;
    let (reason, text) = match e.kind() {
        K::InvalidData => (Reason::ImapProtocol, e.to_string()),
        K::UnexpectedEof | K::ConnectionRefused | K::ConnectionAborted => {
            (Reason::Closed, "the IMAP server closed the connection".to_owned())
        }
        K::Other if e.raw_os_error().is_none() => (Reason::ImapProtocol, unparsed(e)),
        _ => (crate::sys::reason_of(e), e.to_string()),
    };
    StepError::new(reason, format!("{what}: {text}"))
}

/// What async-imap's error says of an answer it could not parse: the answer's start, as it
/// quotes it (`... during parsing of "<the buffer>"`), cut to [`MAX_EXCERPT`] characters.
fn unparsed(e: &io::Error) -> String {
    let text = e.to_string();
    match text.split_once(" during parsing of ") {
        Some((_, quoted)) => {
            let excerpt: String = quoted.chars().take(MAX_EXCERPT).collect();
            let cut = if quoted.chars().nth(MAX_EXCERPT).is_some() { "…" } else { "" };
            format!("the IMAP server's answer is not IMAP: {excerpt}{cut}")
        }
        None => format!("the IMAP server's answer could not be read: {}", crate::probe::truncate(&text)),
    }
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
    let ip = spec
        .resolver
        .first_address(host, spec.module.ip_protocol.family())
        .await
        .map_err(|e| StepError::new(e.failure.reason(), format!("resolving IMAP host {}", e.detail)))?;
    let peer = SocketAddr::new(ip, imap.port);
    let tcp = TcpStream::connect(peer)
        .await
        .map_err(|e| StepError::new(crate::sys::reason_of(&e), format!("IMAP connect to {peer}: {e}")))?;
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
        .map_err(|e| StepError::new(crate::sys::reason_of(&e), e.to_string()))?;
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
        Err(e) => Err(StepError::new(crate::sys::reason_of(&e), e.to_string())),
    }
}

impl Connected {
    /// LOGIN, then the capabilities, the folder list (the junk folder by `\Junk` unless
    /// configured) and SELECT INBOX. A refused LOGIN is `imap_auth_failed`. Each answer
    /// may take `answer_wait`.
    pub async fn login(self, imap: &Imap, answer_wait: Duration) -> Result<Mailbox, StepError> {
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
            Err((async_imap::error::Error::Io(e), _)) => return Err(io_error("LOGIN", &e)),
            // Never the error's own text: it could quote the command.
            Err(_) => return Err(StepError::new(Reason::ImapProtocol, "LOGIN: unexpected answer")),
        };
        let mut mailbox = Mailbox {
            session: Some(session),
            idle: false,
            uidplus: false,
            junk: imap.junk_mailbox.clone(),
            others: Vec::new(),
            selected: String::new(),
            answer_wait,
            waiting: None,
            skipped: Vec::new(),
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
        let mut listed = Vec::new();
        mailbox
            .command("LIST \"\" *", |response| {
                let Response::MailboxData(MailboxDatum::List(list)) = response else { return };
                let attributes = &list.name_attributes;
                if listed.len() < MAX_FOLDERS
                    && !attributes.contains(&NameAttribute::NoSelect)
                    && !list.name.eq_ignore_ascii_case("INBOX")
                {
                    listed.push((list.name.to_string(), attributes.contains(&NameAttribute::Junk)));
                }
            })
            .await?;
        let mut junk = None;
        for (name, is_junk) in listed {
            if let Some(why) = unsendable(&name) {
                mailbox.skipped.push((name, why.to_owned()));
            } else if junk.is_none() && is_junk {
                junk = Some(name);
            } else {
                mailbox.others.push(name);
            }
        }
        if mailbox.junk.is_none() {
            mailbox.junk = junk;
        }
        let configured = mailbox.junk.clone();
        mailbox.others.retain(|o| Some(o) != configured.as_ref());
        mailbox.open("INBOX", true).await??;
        Ok(mailbox)
    }
}

/// Why a listed folder name cannot be sent back: a control character would end the
/// command line (and start another), and a name the client decoded with replacement
/// characters (8-bit bytes that are not UTF-8) is no longer the server's name.
fn unsendable(name: &str) -> Option<&'static str> {
    if name.chars().any(char::is_control) {
        Some("its name holds a control character")
    } else if name.contains('\u{FFFD}') {
        Some("its name is not UTF-8 and cannot be sent back as the server wrote it")
    } else {
        None
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

    /// The command the server has not answered yet, if any: after the probe's deadline
    /// cut a wait off, what the IMAP server left unanswered.
    pub fn waiting_for(&self) -> Option<&str> {
        self.waiting.as_deref()
    }

    /// The folders that could not be searched, each as `"name" (why)`, cut to a line.
    pub fn skipped(&self) -> Vec<String> {
        self.skipped.iter().map(|(name, why)| crate::probe::truncate(&format!("{name:?} ({why})"))).collect()
    }

    /// Selects `name` read-write (`EXAMINE`, read-only, when only searching). A refusal is
    /// the inner error.
    async fn open(&mut self, name: &str, write: bool) -> Result<Answer, StepError> {
        if self.selected == name && write {
            return Ok(Ok(()));
        }
        let verb = if write { "SELECT" } else { "EXAMINE" };
        // Whatever was selected is not, once a SELECT or EXAMINE was sent.
        self.selected = String::new();
        let command = format!("{verb} {}", quote(name));
        // Errors name the folder as the user wrote it, not quoted.
        let named = |e: StepError| StepError {
            detail: e.detail.replacen(&command, &format!("{verb} {name}"), 1),
            ..e
        };
        let answer = self.answer(&command, |_| {}).await.map_err(named)?;
        if answer.is_ok() && write {
            self.selected = name.to_owned();
        }
        Ok(answer.map_err(named))
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
        uids.dedup();
        Ok(uids)
    }

    /// [`Mailbox::answer`], with a refusal as an error like any other.
    async fn command(&mut self, command: &str, each: impl FnMut(&Response<'_>)) -> Result<(), StepError> {
        self.answer(command, each).await?
    }

    /// Sends `command` and reads its answer up to the tagged status; the untagged
    /// responses go to `each`. async-imap's own methods take the end of the connection,
    /// and some a NO, for an empty answer: a SELECT that failed would pass, a refused
    /// SEARCH would find nothing. A server that does not answer within `answer_wait` is
    /// `imap_protocol`: the IMAP server stopped, not the mail. Errors name the command's
    /// first two words.
    async fn answer(
        &mut self,
        command: &str,
        mut each: impl FnMut(&Response<'_>),
    ) -> Result<Answer, StepError> {
        let what: String = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let wait = self.answer_wait;
        self.waiting = Some(what.clone());
        let session = self.session()?;
        let read = tokio::time::timeout(wait, async {
            let tag = session.run_command(command).await.map_err(|e| imap_error(&what, e))?;
            loop {
                let response = next_response!(session, &what);
                match response.parsed() {
                    Response::Done { tag: done, status, outcome } if *done == tag => {
                        return Ok(match status {
                            Status::Ok => Ok(()),
                            _ => Err(refused(&what, status, outcome.information.as_deref())),
                        });
                    }
                    untagged => each(untagged),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(unanswered(&what, wait)));
        if read.is_ok() {
            self.waiting = None;
        }
        read
    }

    /// Waits until a search for `token` names a message in some folder: INBOX first
    /// (woken by IDLE where offered), then the junk folder, then the others, every `poll`
    /// at least. A folder the server will not open is skipped, and said so, not a failure.
    /// Returns when found; the caller's deadline ends the wait.
    pub async fn wait_for(&mut self, token: &str, poll: Duration) -> Result<Found, StepError> {
        let query = format!("HEADER {TOKEN_HEADER} \"{token}\"");
        let inbox = |uids| Found { folder: Folder::Inbox, name: "INBOX".into(), uids };
        let mut folders: Vec<(Folder, String)> = self
            .junk
            .iter()
            .map(|j| (Folder::Junk, j.clone()))
            .chain(self.others.iter().map(|o| (Folder::Other, o.clone())))
            .collect();
        self.open("INBOX", true).await??;
        loop {
            let uids = self.search(&query).await?;
            if !uids.is_empty() {
                return Ok(inbox(uids));
            }
            let mut i = 0;
            while i < folders.len() {
                let (folder, name) = folders[i].clone();
                if let Err(refusal) = self.open(&name, false).await? {
                    self.skipped.push((name, refusal.detail));
                    folders.remove(i);
                    continue;
                }
                let uids = self.search(&query).await?;
                if !uids.is_empty() {
                    return Ok(Found { folder, name, uids });
                }
                i += 1;
            }
            if !folders.is_empty() {
                // Back in INBOX: what arrived while the others were searched is in the
                // SELECT's view already, so IDLE would not tell of it; search once more.
                self.open("INBOX", true).await??;
                let uids = self.search(&query).await?;
                if !uids.is_empty() {
                    return Ok(inbox(uids));
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
        let wait = self.answer_wait;
        // IDLE by hand (RFC 2177): async-imap's own waits for ever on a NO to IDLE.
        self.waiting = Some("IDLE".to_owned());
        let session = self.session()?;
        let tag = tokio::time::timeout(wait, async {
            let tag = session.run_command("IDLE").await.map_err(|e| imap_error("IDLE", e))?;
            loop {
                let response = next_response!(session, "IDLE");
                match response.parsed() {
                    Response::Continue { .. } => return Ok(tag),
                    Response::Done { tag: done, status, outcome } if *done == tag => {
                        return Err(refused("IDLE", status, outcome.information.as_deref()));
                    }
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(unanswered("IDLE", wait)))?;
        // In IDLE nothing is owed: any news of the mailbox ends the wait early; the poll
        // bounds it.
        self.waiting = None;
        let session = self.session()?;
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
        self.waiting = Some("DONE".to_owned());
        let session = self.session()?;
        tokio::time::timeout(wait, async {
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
        })
        .await
        .unwrap_or_else(|_| Err(unanswered("DONE", wait)))?;
        self.waiting = None;
        Ok(())
    }

    /// Reads the headers of the messages the search named, without setting `\Seen`, and
    /// returns the one that carries `token`, whose UID `found` keeps alone. A server whose
    /// search named only messages without it (a broken index, a loose match, a proxy) is
    /// `imap_protocol`, and nothing is flagged or deleted.
    pub async fn header(&mut self, found: &mut Found, token: &str) -> Result<Vec<u8>, StepError> {
        self.open(&found.name, true).await??;
        let named: Vec<u32> = found.uids.iter().copied().take(MAX_SWEEP).collect();
        let headers = self.headers(&named).await?;
        let ours = headers.into_iter().find(|(_, header)| token_of(header).as_deref() == Some(token));
        match ours {
            Some((uid, header)) => {
                found.uids = vec![uid];
                Ok(header)
            }
            None => Err(StepError::new(
                Reason::ImapProtocol,
                format!(
                    "the server's search for the probe's token named UID {} in {}, but no such message carries the token: the search disagrees with the messages; nothing was flagged or deleted",
                    list_uids(&named),
                    found.name
                ),
            )),
        }
    }

    /// `UID FETCH` of the headers of `uids` in the selected folder: (UID, header) for each
    /// answer that names one of them (any other the server adds is ignored).
    async fn headers(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, StepError> {
        let mut headers = Vec::new();
        self.command(&format!("UID FETCH {} (UID BODY.PEEK[HEADER])", list_uids(uids)), |response| {
            if let Some((Some(uid), header)) = fetched_header(response) {
                if uids.contains(&uid) && !headers.iter().any(|(u, _)| *u == uid) {
                    headers.push((uid, header.to_vec()));
                }
            }
        })
        .await?;
        Ok(headers)
    }

    /// Deletes the message found (whose header [`Mailbox::header`] checked), then sweeps
    /// the probe messages older than `sweep_after` from INBOX, the junk folder and the
    /// folder it was found in. Returns how many leftovers it deleted.
    pub async fn clean_up(&mut self, found: &Found, sweep_after: Duration) -> Result<u32, StepError> {
        if let [uid] = found.uids[..] {
            self.delete(&found.name, &[uid]).await?;
        }
        let mut folders = vec!["INBOX".to_owned()];
        folders.extend(self.junk.clone());
        if !folders.contains(&found.name) {
            folders.push(found.name.clone());
        }
        let mut swept = 0;
        for folder in folders {
            swept += self.sweep(&folder, sweep_after).await?;
        }
        self.open("INBOX", true).await??;
        Ok(swept)
    }

    /// Deletes the probe messages of `folder` whose header carries a token of this
    /// exporter older than `sweep_after`. A folder that will not open is left alone.
    async fn sweep(&mut self, folder: &str, sweep_after: Duration) -> Result<u32, StepError> {
        if self.open(folder, true).await?.is_err() {
            return Ok(0);
        }
        let candidates = self.search(&format!("HEADER {TOKEN_HEADER} \"\"")).await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let named: Vec<u32> = candidates.into_iter().take(MAX_SWEEP).collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let stale: Vec<u32> = self
            .headers(&named)
            .await?
            .into_iter()
            .filter(|(_, header)| {
                let made = token_of(header).as_deref().and_then(made_at);
                made.is_some_and(|made| now.saturating_sub(made) >= sweep_after.as_secs())
            })
            .map(|(uid, _)| uid)
            .collect();
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
        self.open(folder, true).await??;
        let set = list_uids(uids);
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

/// A UID set as IMAP writes it: `3,7,9`.
fn list_uids(uids: &[u32]) -> String {
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// A command the IMAP server did not answer within `wait`.
fn unanswered(what: &str, wait: Duration) -> StepError {
    StepError::new(
        Reason::ImapProtocol,
        format!("{what}: the IMAP server did not answer within {:.1} s", wait.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_text_is_taken_out_of_async_imaps_wording() {
        let said = "code: None, info: Some(\"[LIMIT] Maximum number of connections from user+IP exceeded\")";
        assert_eq!(server_text(said), "[LIMIT] Maximum number of connections from user+IP exceeded");
        assert_eq!(server_text("plain words"), "plain words");
        let bad = "outcome: Outcome { code: None, information: Some(\"[CLIENTBUG] try again\") }";
        assert_eq!(server_text(bad), "[CLIENTBUG] try again");
    }
}
