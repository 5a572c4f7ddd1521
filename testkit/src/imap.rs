//! A fake IMAP4rev1 server: the mailbox of the delivery probe's tests.
//!
//! It speaks just enough IMAP for the probe's client (async-imap): implicit TLS or STARTTLS
//! on a plain port, the `* OK` greeting, CAPABILITY (IDLE and UIDPLUS each can be withheld),
//! LOGIN (a wrong password gets `NO [AUTHENTICATIONFAILED]`), LIST, SELECT and EXAMINE,
//! SEARCH (`ALL`, `HEADER`, `UID`, `DELETED`, `UNDELETED`, `SEEN`, `UNSEEN`), FETCH (`UID`,
//! `FLAGS`, `RFC822.SIZE`, `BODY[HEADER]`, `BODY[]`, `BODY[TEXT]`, `RFC822.HEADER`, and the
//! `.PEEK` forms), STORE, EXPUNGE and UID EXPUNGE, IDLE/DONE, NOOP and LOGOUT, each with
//! its `UID` form where IMAP has one. Literals from the client are not supported. A test
//! can have any command answered with a status of its choosing instead
//! ([`Behaviour::replies`]: a LOGIN refused with `[LIMIT]`, a STORE with `[NOPERM]`), with
//! bytes of its choosing ([`Behaviour::raw`]: a lying search, a huge literal, garbage, an
//! echo of the command, or silence), and folders that refuse to open
//! ([`Behaviour::refused_folders`]).
//!
//! The messages live in a [`Mailstore`] (folders of messages, each a UID, flags and the raw
//! bytes) that the test shares: it deposits messages (the fake SMTP server's
//! [`crate::smtp::Behaviour::on_message`] hook can, see [`Mailstore::deliver_to`]) and
//! inspects what is left after a probe. A session in IDLE is told `* N EXISTS` as soon as
//! its folder grows. Every command line is recorded ([`FakeImap::lines`], the LOGIN
//! password included, for leak checks), and every session is bounded: line length, number
//! of commands, the wait for each line (IDLE's DONE included) and its whole length.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestPki;
use crate::smtp::MessageHook;

/// How long the server waits for each command line, and for DONE in IDLE.
const COMMAND_WAIT: Duration = Duration::from_secs(10);
/// The UIDVALIDITY of every folder: the store never renumbers.
const UID_VALIDITY: u32 = 1;
/// The flags a folder knows, for SELECT's FLAGS.
const FLAGS: &str = r"\Answered \Flagged \Deleted \Seen \Draft";

/// How the connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain until STARTTLS; LOGIN is refused before (port 143).
    Starttls,
}

/// How the fake server behaves. Start from [`Behaviour::default`] and change what the test
/// is about.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub tls: Tls,
    /// Advertise and accept IDLE.
    pub idle: bool,
    /// Advertise UIDPLUS and accept UID EXPUNGE.
    pub uidplus: bool,
    /// The accepted credentials.
    pub username: String,
    pub password: String,
    /// The folder listed with `\Junk` (RFC 6154), if any.
    pub junk_folder: Option<String>,
    /// More folders, listed after INBOX and the junk folder.
    pub other_folders: Vec<String>,
    /// The longest command line read, line ending included; a longer one ends the session
    /// as a failure.
    pub max_line_bytes: usize,
    /// Commands served on one connection (IDLE's DONE not counted); one more ends the
    /// session as a failure.
    pub max_commands: usize,
    /// The whole session ends as a failure after this long.
    pub session_time_limit: Option<Duration>,
    /// Replies to commands by name (`"UID STORE"`, `"SELECT"`; any case) with this status
    /// and text after the tag (`"NO [NOPERM] Permission denied"`) instead of serving them;
    /// [`CLOSE`] closes the connection instead of answering.
    pub replies: Vec<(String, String)>,
    /// Bytes written instead of serving a command, by name as in `replies`, with `{tag}`
    /// replaced by the command's tag and `{line}` by the whole command line as received
    /// (a server that echoes what it was sent, a password included). The hostile modes:
    /// a search that names another message, a literal announced far larger than what
    /// follows, garbage, a folder list with names that are not UTF-8. Empty bytes: the
    /// command is never answered (a server that stopped), and the session goes on reading.
    pub raw: Vec<(String, Vec<u8>)>,
    /// Folders whose SELECT and EXAMINE are refused with `NO [NOPERM]`.
    pub refused_folders: Vec<String>,
    /// The greeting line, CRLF added (`* OK ...` by default).
    pub greeting: String,
}

/// A reply in [`Behaviour::replies`] that closes the connection instead of answering.
pub const CLOSE: &str = "<close>";
/// A reply in [`Behaviour::replies`] that sends part of a line, then closes.
pub const CLOSE_MIDWAY: &str = "<close midway>";

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            tls: Tls::Implicit,
            idle: true,
            uidplus: true,
            username: "inbox@example.test".into(),
            password: "imap secret".into(),
            junk_folder: Some("Junk".into()),
            other_folders: Vec::new(),
            max_line_bytes: 8192,
            max_commands: 10_000,
            session_time_limit: Some(Duration::from_secs(60)),
            replies: Vec::new(),
            raw: Vec::new(),
            refused_folders: Vec::new(),
            greeting: "* OK fake.example.test IMAP4rev1 ready".into(),
        }
    }
}

/// One message of a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub uid: u32,
    /// System flags with their backslash (`\Deleted`), keywords as they are.
    pub flags: Vec<String>,
    pub raw: Vec<u8>,
}

impl Message {
    /// Whether the message has `flag` (case-insensitive, as IMAP compares flags).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// The header, up to and including the empty line that ends it (the whole message
    /// when there is none).
    pub fn header(&self) -> &[u8] {
        header_of(&self.raw)
    }

    /// The values of the header fields named `name` (case-insensitive), unfolded.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        fields(self.header())
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
}

struct Folder {
    name: String,
    /// LIST attributes besides `\HasNoChildren` (`\Junk`).
    attributes: Vec<String>,
    uid_next: u32,
    messages: Vec<Message>,
}

/// The mailbox: folders of messages, shared by the server's sessions and the test. A
/// clone is the same store.
#[derive(Clone)]
pub struct Mailstore {
    folders: Arc<Mutex<Vec<Folder>>>,
    /// Bumped on every deposit: what wakes a session in IDLE.
    changes: Arc<watch::Sender<u64>>,
}

impl Mailstore {
    /// A store with INBOX, the junk folder (marked `\Junk`) if any, and `others`, empty.
    pub fn new(junk: Option<&str>, others: &[String]) -> Mailstore {
        let folder = |name: &str, attributes: Vec<String>| Folder {
            name: name.to_owned(),
            attributes,
            uid_next: 1,
            messages: Vec::new(),
        };
        let mut folders = vec![folder("INBOX", Vec::new())];
        folders.extend(junk.map(|j| folder(j, vec![r"\Junk".into()])));
        folders.extend(others.iter().map(|o| folder(o, Vec::new())));
        Mailstore { folders: Arc::new(Mutex::new(folders)), changes: Arc::new(watch::channel(0).0) }
    }

    /// Adds `attribute` (`\\Noselect`) to what LIST says of `folder`. Panics when there is
    /// no such folder.
    pub fn mark(&self, folder: &str, attribute: &str) {
        let mut folders = self.folders.lock().unwrap();
        let folder = find(&mut folders, folder).expect("a folder of the store");
        folder.attributes.push(attribute.to_owned());
    }

    /// Adds a message to `folder` (INBOX in any case) and returns its UID. Panics when
    /// there is no such folder.
    pub fn deposit(&self, folder: &str, raw: impl Into<Vec<u8>>) -> u32 {
        self.deposit_with_flags(folder, raw, &[])
    }

    /// Adds a message with `flags` already set (`\Deleted`, say) and returns its UID.
    pub fn deposit_with_flags(&self, folder: &str, raw: impl Into<Vec<u8>>, flags: &[&str]) -> u32 {
        let uid = {
            let mut folders = self.folders.lock().unwrap();
            let target = find(&mut folders, folder)
                .unwrap_or_else(|| panic!("the fake IMAP store has no folder {folder:?}"));
            let uid = target.uid_next;
            target.uid_next += 1;
            let flags = flags.iter().map(|f| (*f).to_owned()).collect();
            target.messages.push(Message { uid, flags, raw: raw.into() });
            uid
        };
        self.changes.send_modify(|n| *n += 1);
        uid
    }

    /// Adds a message to `folder` after `delay`, on a task of its own (inside a runtime).
    pub fn deposit_later(&self, folder: &str, raw: Vec<u8>, delay: Duration) {
        let (store, folder) = (self.clone(), folder.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            store.deposit(&folder, raw);
        });
    }

    /// A hook for the fake SMTP server that files every accepted message into `folder`,
    /// `delay` after the 250.
    pub fn deliver_to(&self, folder: &str, delay: Duration) -> MessageHook {
        let (store, folder) = (self.clone(), folder.to_owned());
        Arc::new(move |message| {
            if delay.is_zero() {
                store.deposit(&folder, message);
            } else {
                store.deposit_later(&folder, message, delay);
            }
        })
    }

    /// The messages of `folder` now, in order (empty when there is no such folder).
    pub fn messages(&self, folder: &str) -> Vec<Message> {
        let mut folders = self.folders.lock().unwrap();
        find(&mut folders, folder).map(|f| f.messages.clone()).unwrap_or_default()
    }

    /// The folder names, in LIST order.
    pub fn folders(&self) -> Vec<String> {
        self.folders.lock().unwrap().iter().map(|f| f.name.clone()).collect()
    }
}

/// `bytes` with every `from` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The folder named `name`; INBOX in any case.
fn find<'a>(folders: &'a mut [Folder], name: &str) -> Option<&'a mut Folder> {
    folders.iter_mut().find(|f| f.name == name || (f.name == "INBOX" && name.eq_ignore_ascii_case("INBOX")))
}

/// What the server saw on one connection.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Command lines received, in order (LOGIN with its password, and IDLE's DONE).
    pub lines: Vec<String>,
    /// A TLS handshake completed (implicit TLS or STARTTLS).
    pub tls_established: bool,
    /// A LOGIN succeeded.
    pub logged_in: bool,
    /// Why the session ended before the client logged out or closed: an I/O error, a
    /// failed handshake, a bound of [`Behaviour`].
    pub failure: Option<String>,
}

/// Keeps what every session saw.
#[derive(Default)]
struct Recorder {
    /// Every command line of every session, as it arrives.
    lines: Mutex<Vec<String>>,
    /// The finished sessions.
    sessions: Mutex<Vec<Observed>>,
}

/// A running fake IMAP server on 127.0.0.1.
pub struct FakeImap {
    pub addr: SocketAddr,
    store: Mailstore,
    recorder: Arc<Recorder>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeImap {
    /// Starts a server that treats every connection with `behaviour`, on an empty store
    /// with the behaviour's folders.
    pub async fn start(behaviour: Behaviour, pki: &TestPki) -> FakeImap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake imap");
        let addr = listener.local_addr().unwrap();
        let store = Mailstore::new(behaviour.junk_folder.as_deref(), &behaviour.other_folders);
        let recorder = Arc::new(Recorder::default());
        let task = tokio::spawn(serve_listener(
            listener,
            Arc::new(behaviour),
            pki.acceptor(),
            store.clone(),
            recorder.clone(),
        ));
        FakeImap { addr, store, recorder, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The mailbox (the same store, not a copy).
    pub fn store(&self) -> Mailstore {
        self.store.clone()
    }

    /// Every command line received so far, on every connection, finished or not.
    pub fn lines(&self) -> Vec<String> {
        self.recorder.lines.lock().unwrap().clone()
    }

    /// What the server saw, one entry per finished connection.
    pub fn observed(&self) -> Vec<Observed> {
        self.recorder.sessions.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` connections have finished, then returns them.
    pub async fn wait_for_connections(&self, n: usize) -> Vec<Observed> {
        crate::wait_for_sessions(&self.recorder.sessions, n, "fake IMAP server").await
    }
}

impl Drop for FakeImap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_listener(
    listener: TcpListener,
    behaviour: Arc<Behaviour>,
    acceptor: TlsAcceptor,
    store: Mailstore,
    recorder: Arc<Recorder>,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (b, acceptor, store, recorder) =
            (behaviour.clone(), acceptor.clone(), store.clone(), recorder.clone());
        tokio::spawn(async move {
            let mut seen = Observed::default();
            let session = serve_session(Box::new(tcp), &b, &acceptor, &store, &recorder, &mut seen);
            let outcome = match b.session_time_limit {
                Some(limit) => tokio::time::timeout(limit, session)
                    .await
                    .unwrap_or_else(|_| Err(format!("session longer than {limit:?}"))),
                None => session.await,
            };
            if let Err(failure) = outcome {
                seen.failure.get_or_insert(failure);
            }
            recorder.sessions.lock().unwrap().push(seen);
        });
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Stream = Box<dyn Io>;

/// One connection's reading and writing. Reading a line keeps what it read so far in
/// `pending`, so that a read given up for another event (in IDLE) loses nothing.
struct Conn {
    reader: BufReader<Stream>,
    pending: Vec<u8>,
    max_line: usize,
}

impl Conn {
    fn new(stream: Stream, max_line: usize) -> Conn {
        Conn { reader: BufReader::new(stream), pending: Vec::new(), max_line }
    }

    /// One line without its ending; `None` at the end of the stream.
    async fn read_line(&mut self) -> Result<Option<String>, String> {
        let limit = self.max_line.saturating_sub(self.pending.len()) as u64;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut self.pending).await;
        read.map_err(|e| format!("read: {e}"))?;
        if self.pending.ends_with(b"\n") {
            let line = std::mem::take(&mut self.pending);
            return Ok(Some(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned()));
        }
        if self.pending.len() >= self.max_line {
            return Err(format!("command line longer than {} bytes", self.max_line));
        }
        Ok(None)
    }

    /// [`Conn::read_line`] within [`COMMAND_WAIT`].
    async fn next_line(&mut self) -> Result<Option<String>, String> {
        match tokio::time::timeout(COMMAND_WAIT, self.read_line()).await {
            Ok(line) => line,
            Err(_) => Err(format!("no command within {COMMAND_WAIT:?}")),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let w = self.reader.get_mut();
        w.write_all(bytes).await.map_err(|e| format!("write: {e}"))?;
        w.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// The TLS handshake after the OK to STARTTLS.
    async fn upgrade(self, acceptor: &TlsAcceptor) -> Result<Conn, String> {
        if !self.pending.is_empty() || !self.reader.buffer().is_empty() {
            return Err("bytes pipelined after STARTTLS".into());
        }
        let tls =
            acceptor.accept(self.reader.into_inner()).await.map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Conn::new(Box::new(tls), self.max_line))
    }
}

/// The folder a session has selected, and the EXISTS it was last told.
struct Selected {
    name: String,
    read_only: bool,
    told: usize,
}

/// What to do after a command.
enum Flow {
    Go,
    StartTls,
    End,
}

/// One session: its behaviour, the store, and its state.
struct Session<'a> {
    b: &'a Behaviour,
    store: &'a Mailstore,
    recorder: &'a Recorder,
    tls: bool,
    logged_in: bool,
    selected: Option<Selected>,
}

async fn serve_session(
    stream: Stream,
    b: &Behaviour,
    acceptor: &TlsAcceptor,
    store: &Mailstore,
    recorder: &Recorder,
    seen: &mut Observed,
) -> Result<(), String> {
    let stream: Stream = match b.tls {
        Tls::Implicit => {
            let tls = acceptor.accept(stream).await.map_err(|e| format!("TLS handshake: {e}"))?;
            seen.tls_established = true;
            Box::new(tls)
        }
        Tls::Starttls => stream,
    };
    let mut conn = Conn::new(stream, b.max_line_bytes);
    conn.write(format!("{}\r\n", b.greeting).as_bytes()).await?;
    let mut session =
        Session { b, store, recorder, tls: seen.tls_established, logged_in: false, selected: None };
    for _ in 0..b.max_commands {
        let Some(line) = conn.next_line().await? else { return Ok(()) };
        session.record(seen, &line);
        match session.command(&mut conn, &line, seen).await? {
            Flow::Go => {}
            Flow::End => {
                let _ = conn.reader.get_mut().shutdown().await;
                return Ok(());
            }
            Flow::StartTls => {
                conn = conn.upgrade(acceptor).await?;
                session.tls = true;
                seen.tls_established = true;
            }
        }
    }
    Err(format!("more than {} commands", b.max_commands))
}

impl Session<'_> {
    fn record(&self, seen: &mut Observed, line: &str) {
        seen.lines.push(line.to_owned());
        self.recorder.lines.lock().unwrap().push(line.to_owned());
    }

    fn capabilities(&self) -> String {
        let mut caps = vec!["IMAP4rev1", "SPECIAL-USE"];
        if self.b.tls == Tls::Starttls && !self.tls {
            caps.extend(["STARTTLS", "LOGINDISABLED"]);
        } else {
            caps.push("AUTH=PLAIN");
        }
        if self.b.idle {
            caps.push("IDLE");
        }
        if self.b.uidplus {
            caps.push("UIDPLUS");
        }
        caps.join(" ")
    }

    /// Answers one command line.
    async fn command(&mut self, conn: &mut Conn, line: &str, seen: &mut Observed) -> Result<Flow, String> {
        let tokens = match tokenize(line) {
            Ok(tokens) => tokens,
            Err(e) => {
                let tag = line.split_whitespace().next().unwrap_or("*");
                conn.write(format!("{tag} BAD {e}\r\n").as_bytes()).await?;
                return Ok(Flow::Go);
            }
        };
        let (tag, verb, args) = match tokens.as_slice() {
            [Tok::Atom(tag), Tok::Atom(verb), args @ ..] => (tag.clone(), verb.to_ascii_uppercase(), args),
            _ => {
                conn.write(b"* BAD no tag or command\r\n").await?;
                return Ok(Flow::Go);
            }
        };
        let (uid, verb, args) = match (verb.as_str(), args) {
            ("UID", [Tok::Atom(sub), rest @ ..])
                if ["SEARCH", "FETCH", "STORE", "EXPUNGE"].iter().any(|c| sub.eq_ignore_ascii_case(c)) =>
            {
                (true, sub.to_ascii_uppercase(), rest)
            }
            _ => (false, verb, args),
        };
        let mut out = Vec::new();
        let name = if uid { format!("UID {verb}") } else { verb.clone() };
        if let Some((_, reply)) = self.b.replies.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            if reply == CLOSE {
                return Ok(Flow::End);
            }
            if reply == CLOSE_MIDWAY {
                conn.write(b"* OK [UIDVALIDITY 1").await?;
                return Ok(Flow::End);
            }
            conn.write(format!("{tag} {reply}\r\n").as_bytes()).await?;
            return Ok(Flow::Go);
        }
        if let Some((_, bytes)) = self.b.raw.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            let bytes = replace(&replace(bytes, b"{tag}", tag.as_bytes()), b"{line}", line.as_bytes());
            if !bytes.is_empty() {
                conn.write(&bytes).await?;
            }
            return Ok(Flow::Go);
        }
        let result = match verb.as_str() {
            "CAPABILITY" => {
                out.extend(format!("* CAPABILITY {}\r\n", self.capabilities()).bytes());
                Ok("CAPABILITY completed".to_owned())
            }
            "NOOP" => {
                self.announce(&mut out);
                Ok("NOOP completed".into())
            }
            "LOGOUT" => {
                out.extend(format!("* BYE fake IMAP logging out\r\n{tag} OK LOGOUT completed\r\n").bytes());
                conn.write(&out).await?;
                return Ok(Flow::End);
            }
            "STARTTLS" if self.b.tls == Tls::Starttls && !self.tls => {
                conn.write(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes()).await?;
                return Ok(Flow::StartTls);
            }
            "LOGIN" => self.login(args, seen),
            "IDLE" if self.b.idle && self.logged_in => return self.idle(conn, &tag, seen).await,
            _ if !self.logged_in => Err("BAD command unknown or not allowed before LOGIN".to_owned()),
            "LIST" => self.list(args, &mut out),
            "SELECT" | "EXAMINE" => self.select(args, verb == "EXAMINE", &mut out),
            _ if self.selected.is_none() => {
                Err("BAD command unknown or not allowed before SELECT".to_owned())
            }
            "SEARCH" => self.search(args, uid, &mut out),
            "FETCH" => self.fetch(args, uid, &mut out),
            "STORE" => self.store_flags(args, uid, &mut out),
            "EXPUNGE" if !uid || self.b.uidplus => self.expunge(args, uid, &mut out),
            _ => Err("BAD command unknown".to_owned()),
        };
        match result {
            Ok(text) => out.extend(format!("{tag} OK {text}\r\n").bytes()),
            Err(text) => out.extend(format!("{tag} {text}\r\n").bytes()),
        }
        conn.write(&out).await?;
        Ok(Flow::Go)
    }

    fn login(&mut self, args: &[Tok], seen: &mut Observed) -> Result<String, String> {
        if self.logged_in {
            return Err("BAD already logged in".into());
        }
        if !self.tls {
            return Err("NO [PRIVACYREQUIRED] LOGIN only after STARTTLS".into());
        }
        let [user, password] = args else { return Err("BAD LOGIN wants a user name and a password".into()) };
        if user.text() == self.b.username && password.text() == self.b.password {
            self.logged_in = true;
            seen.logged_in = true;
            Ok("LOGIN completed".into())
        } else {
            Err("NO [AUTHENTICATIONFAILED] Authentication failed.".into())
        }
    }

    fn list(&mut self, args: &[Tok], out: &mut Vec<u8>) -> Result<String, String> {
        let [reference, pattern] = args else {
            return Err("BAD LIST wants a reference and a pattern".into());
        };
        let pattern = format!("{}{}", reference.text(), pattern.text());
        for folder in self.store.folders.lock().unwrap().iter() {
            if wildcard(pattern.as_bytes(), folder.name.as_bytes()) {
                let mut attributes = vec![r"\HasNoChildren".to_owned()];
                attributes.extend(folder.attributes.iter().cloned());
                out.extend(
                    format!("* LIST ({}) \"/\" {}\r\n", attributes.join(" "), quote(&folder.name)).bytes(),
                );
            }
        }
        Ok("LIST completed".into())
    }

    fn select(&mut self, args: &[Tok], read_only: bool, out: &mut Vec<u8>) -> Result<String, String> {
        self.selected = None;
        let [name] = args else { return Err("BAD SELECT wants a mailbox name".into()) };
        if self.b.refused_folders.iter().any(|f| f == name.text()) {
            return Err("NO [NOPERM] Permission denied".into());
        }
        let mut folders = self.store.folders.lock().unwrap();
        let Some(folder) = find(&mut folders, name.text()) else {
            return Err("NO [NONEXISTENT] Mailbox doesn't exist".into());
        };
        let exists = folder.messages.len();
        let permanent = if read_only { String::new() } else { format!(r"{FLAGS} \*") };
        out.extend(
            format!(
                "* FLAGS ({FLAGS})\r\n* {exists} EXISTS\r\n* 0 RECENT\r\n\
                 * OK [PERMANENTFLAGS ({permanent})] Flags permitted.\r\n\
                 * OK [UIDVALIDITY {UID_VALIDITY}] UIDs valid\r\n\
                 * OK [UIDNEXT {}] Predicted next UID\r\n",
                folder.uid_next
            )
            .bytes(),
        );
        self.selected = Some(Selected { name: folder.name.clone(), read_only, told: exists });
        Ok(if read_only { "[READ-ONLY] EXAMINE completed" } else { "[READ-WRITE] SELECT completed" }.into())
    }

    /// Tells the session of messages added to its folder since it was last told.
    fn announce(&mut self, out: &mut Vec<u8>) {
        let Some(selected) = self.selected.as_mut() else { return };
        let mut folders = self.store.folders.lock().unwrap();
        let exists = find(&mut folders, &selected.name).map_or(0, |f| f.messages.len());
        if exists > selected.told {
            out.extend(format!("* {exists} EXISTS\r\n").bytes());
        }
        selected.told = exists;
    }

    /// Runs `f` on the selected folder's messages, after telling of new ones.
    fn on_selected<R>(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut Vec<Message>, &mut Vec<u8>, bool) -> Result<R, String>,
    ) -> Result<R, String> {
        self.announce(out);
        let selected = self.selected.as_ref().expect("checked before");
        let mut folders = self.store.folders.lock().unwrap();
        let folder = find(&mut folders, &selected.name).ok_or("NO the selected folder is gone")?;
        f(&mut folder.messages, out, selected.read_only)
    }

    fn search(&mut self, args: &[Tok], uid: bool, out: &mut Vec<u8>) -> Result<String, String> {
        let criteria = search_criteria(args)?;
        self.on_selected(out, |messages, out, _| {
            let mut line = "* SEARCH".to_owned();
            for (i, message) in messages.iter().enumerate() {
                if criteria.iter().all(|c| c.matches(message)) {
                    line.push_str(&format!(" {}", if uid { message.uid } else { i as u32 + 1 }));
                }
            }
            out.extend(format!("{line}\r\n").bytes());
            Ok("SEARCH completed".into())
        })
    }

    fn fetch(&mut self, args: &[Tok], uid: bool, out: &mut Vec<u8>) -> Result<String, String> {
        let [set, items] = args else { return Err("BAD FETCH wants a set and items".into()) };
        let set = Set::parse(set.text())?;
        let mut items = fetch_items(items)?;
        if uid && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        self.on_selected(out, |messages, out, read_only| {
            let max = if uid { messages.last().map_or(0, |m| m.uid) } else { messages.len() as u32 };
            for (i, message) in messages.iter_mut().enumerate() {
                let seq = i as u32 + 1;
                if !set.contains(if uid { message.uid } else { seq }, max) {
                    continue;
                }
                let sets_seen = items.iter().any(|item| matches!(item, Item::Section { peek: false, .. }));
                if sets_seen && !read_only && !message.has_flag(r"\Seen") {
                    message.flags.push(r"\Seen".into());
                }
                out.extend(format!("* {seq} FETCH (").bytes());
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(b' ');
                    }
                    item.write(message, out);
                }
                out.extend(b")\r\n");
            }
            Ok("FETCH completed".into())
        })
    }

    fn store_flags(&mut self, args: &[Tok], uid: bool, out: &mut Vec<u8>) -> Result<String, String> {
        let [set, operation, flags @ ..] = args else {
            return Err("BAD STORE wants a set, an operation and flags".into());
        };
        let set = Set::parse(set.text())?;
        let operation = operation.text().to_ascii_uppercase();
        let (operation, silent) = match operation.strip_suffix(".SILENT") {
            Some(op) => (op.to_owned(), true),
            None => (operation, false),
        };
        let flags: Vec<String> = match flags {
            [Tok::List(list)] => list.split_whitespace().map(str::to_owned).collect(),
            flags => flags.iter().map(|f| f.text().to_owned()).collect(),
        };
        self.on_selected(out, |messages, out, read_only| {
            if read_only {
                return Err("NO [READ-ONLY] the mailbox is read-only".into());
            }
            let max = if uid { messages.last().map_or(0, |m| m.uid) } else { messages.len() as u32 };
            for (i, message) in messages.iter_mut().enumerate() {
                let seq = i as u32 + 1;
                if !set.contains(if uid { message.uid } else { seq }, max) {
                    continue;
                }
                match operation.as_str() {
                    "+FLAGS" => {
                        for flag in &flags {
                            if !message.has_flag(flag) {
                                message.flags.push(flag.clone());
                            }
                        }
                    }
                    "-FLAGS" => message.flags.retain(|f| !flags.iter().any(|g| g.eq_ignore_ascii_case(f))),
                    "FLAGS" => message.flags = flags.clone(),
                    _ => return Err("BAD STORE: unknown operation".into()),
                }
                if !silent {
                    let uid_part = if uid { format!("UID {} ", message.uid) } else { String::new() };
                    out.extend(
                        format!("* {seq} FETCH ({uid_part}FLAGS ({}))\r\n", message.flags.join(" ")).bytes(),
                    );
                }
            }
            Ok("STORE completed".into())
        })
    }

    /// EXPUNGE, or UID EXPUNGE of a set: only messages flagged `\Deleted` (and in the set).
    fn expunge(&mut self, args: &[Tok], uid: bool, out: &mut Vec<u8>) -> Result<String, String> {
        let set = match (uid, args) {
            (false, []) => None,
            (true, [set]) => Some(Set::parse(set.text())?),
            _ => return Err("BAD EXPUNGE arguments".into()),
        };
        let removed = self.on_selected(out, |messages, out, read_only| {
            if read_only {
                return Err("NO [READ-ONLY] the mailbox is read-only".into());
            }
            let max = messages.last().map_or(0, |m| m.uid);
            let (mut i, mut removed) = (0, 0);
            while i < messages.len() {
                let message = &messages[i];
                if message.has_flag(r"\Deleted") && set.as_ref().is_none_or(|s| s.contains(message.uid, max))
                {
                    messages.remove(i);
                    out.extend(format!("* {} EXPUNGE\r\n", i + 1).bytes());
                    removed += 1;
                } else {
                    i += 1;
                }
            }
            Ok(removed)
        })?;
        if let Some(selected) = self.selected.as_mut() {
            selected.told = selected.told.saturating_sub(removed);
        }
        Ok("EXPUNGE completed".into())
    }

    /// IDLE: `+ idling`, then `* N EXISTS` whenever the selected folder grows, until DONE.
    async fn idle(&mut self, conn: &mut Conn, tag: &str, seen: &mut Observed) -> Result<Flow, String> {
        let mut changes = self.store.changes.subscribe();
        conn.write(b"+ idling\r\n").await?;
        let deadline = tokio::time::Instant::now() + COMMAND_WAIT;
        loop {
            changes.borrow_and_update();
            let mut out = Vec::new();
            self.announce(&mut out);
            if !out.is_empty() {
                conn.write(&out).await?;
            }
            tokio::select! {
                line = conn.read_line() => {
                    let Some(line) = line? else { return Ok(Flow::End) };
                    self.record(seen, &line);
                    let answer = if line.eq_ignore_ascii_case("DONE") {
                        format!("{tag} OK IDLE terminated\r\n")
                    } else {
                        format!("{tag} BAD expected DONE\r\n")
                    };
                    conn.write(answer.as_bytes()).await?;
                    return Ok(Flow::Go);
                }
                Ok(()) = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!("no DONE within {COMMAND_WAIT:?}"));
                }
            }
        }
    }
}

/// A token of a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// An atom; `[...]` is part of it, spaces inside included (`BODY.PEEK[HEADER]`).
    Atom(String),
    /// A quoted string, unescaped.
    Str(String),
    /// What is between the parentheses of a list, as it is.
    List(String),
}

impl Tok {
    fn text(&self) -> &str {
        match self {
            Tok::Atom(s) | Tok::Str(s) | Tok::List(s) => s,
        }
    }
}

fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' => {
                chars.next();
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => s.push(chars.next().ok_or("unterminated quoted string")?),
                        Some('"') => break,
                        Some(c) => s.push(c),
                        None => return Err("unterminated quoted string".into()),
                    }
                }
                tokens.push(Tok::Str(s));
            }
            '(' => {
                chars.next();
                let (mut depth, mut s) = (1, String::new());
                loop {
                    let c = chars.next().ok_or("unterminated list")?;
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    s.push(c);
                }
                tokens.push(Tok::List(s));
            }
            '{' => return Err("literals are not supported".into()),
            _ => {
                let mut s = String::new();
                let mut bracket = false;
                while let Some(&c) = chars.peek() {
                    if !bracket && matches!(c, ' ' | '(' | '"') {
                        break;
                    }
                    bracket = match c {
                        '[' => true,
                        ']' => false,
                        _ => bracket,
                    };
                    s.push(c);
                    chars.next();
                }
                if s.ends_with('}') && s.contains('{') {
                    return Err("literals are not supported".into());
                }
                tokens.push(Tok::Atom(s));
            }
        }
    }
    Ok(tokens)
}

/// A search key; a message matches when it matches every key given.
enum Criterion {
    All,
    /// A field named so (case-insensitive) whose value contains the text (case-insensitive);
    /// an empty text matches every message having the field.
    Header(String, String),
    Uid(Set),
    Flag(&'static str, bool),
}

impl Criterion {
    fn matches(&self, message: &Message) -> bool {
        match self {
            Criterion::All => true,
            Criterion::Header(name, text) => {
                let text = text.to_lowercase();
                message.header_values(name).iter().any(|v| v.to_lowercase().contains(&text))
            }
            Criterion::Uid(set) => set.contains(message.uid, u32::MAX),
            Criterion::Flag(flag, wanted) => message.has_flag(flag) == *wanted,
        }
    }
}

fn search_criteria(args: &[Tok]) -> Result<Vec<Criterion>, String> {
    let mut criteria = Vec::new();
    let mut args = args.iter();
    while let Some(key) = args.next() {
        let mut value =
            || args.next().map(Tok::text).ok_or_else(|| "BAD SEARCH: a key without its value".to_owned());
        let criterion = match key.text().to_ascii_uppercase().as_str() {
            "ALL" => Criterion::All,
            "CHARSET" => {
                value()?;
                continue;
            }
            "HEADER" => {
                let name = value()?.to_owned();
                Criterion::Header(name, value()?.to_owned())
            }
            "UID" => Criterion::Uid(Set::parse(value()?)?),
            "DELETED" => Criterion::Flag(r"\Deleted", true),
            "UNDELETED" => Criterion::Flag(r"\Deleted", false),
            "SEEN" => Criterion::Flag(r"\Seen", true),
            "UNSEEN" => Criterion::Flag(r"\Seen", false),
            other => return Err(format!("BAD SEARCH key {other} not supported")),
        };
        criteria.push(criterion);
    }
    if criteria.is_empty() {
        return Err("BAD SEARCH wants a key".into());
    }
    Ok(criteria)
}

/// A sequence set or UID set: numbers and ranges, `*` the largest in use.
#[derive(Debug)]
struct Set(Vec<(Option<u32>, Option<u32>)>);

impl Set {
    fn parse(text: &str) -> Result<Set, String> {
        let number = |n: &str| -> Result<Option<u32>, String> {
            if n == "*" {
                return Ok(None);
            }
            n.parse().map(Some).map_err(|_| format!("BAD not a sequence set: {text}"))
        };
        let ranges = text
            .split(',')
            .map(|part| match part.split_once(':') {
                Some((a, b)) => Ok((number(a)?, number(b)?)),
                None => number(part).map(|n| (n, n)),
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Set(ranges))
    }

    /// Whether `n` is in the set, `*` being `max`.
    fn contains(&self, n: u32, max: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.unwrap_or(max), b.unwrap_or(max));
            (a.min(b)..=a.max(b)).contains(&n)
        })
    }
}

/// A FETCH data item.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Uid,
    Flags,
    Size,
    /// `BODY[HEADER]`, `BODY[TEXT]` or `BODY[]` (`.PEEK` leaves `\Seen` alone), or
    /// `RFC822.HEADER` (which never sets it).
    Section {
        part: Part,
        peek: bool,
        name: &'static str,
    },
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Part {
    Header,
    Text,
    All,
}

fn fetch_items(items: &Tok) -> Result<Vec<Item>, String> {
    let words = match items {
        Tok::List(list) => tokenize(list)?,
        atom => vec![atom.clone()],
    };
    words
        .iter()
        .map(|word| {
            Ok(match word.text().to_ascii_uppercase().as_str() {
                "UID" => Item::Uid,
                "FLAGS" => Item::Flags,
                "RFC822.SIZE" => Item::Size,
                "RFC822.HEADER" => Item::Section { part: Part::Header, peek: true, name: "RFC822.HEADER" },
                "BODY[HEADER]" => Item::Section { part: Part::Header, peek: false, name: "BODY[HEADER]" },
                "BODY.PEEK[HEADER]" => Item::Section { part: Part::Header, peek: true, name: "BODY[HEADER]" },
                "BODY[TEXT]" => Item::Section { part: Part::Text, peek: false, name: "BODY[TEXT]" },
                "BODY.PEEK[TEXT]" => Item::Section { part: Part::Text, peek: true, name: "BODY[TEXT]" },
                "BODY[]" => Item::Section { part: Part::All, peek: false, name: "BODY[]" },
                "BODY.PEEK[]" => Item::Section { part: Part::All, peek: true, name: "BODY[]" },
                other => return Err(format!("BAD FETCH item {other} not supported")),
            })
        })
        .collect()
}

impl Item {
    /// The item and its value, as the FETCH response carries it; sections as literals.
    fn write(&self, message: &Message, out: &mut Vec<u8>) {
        match self {
            Item::Uid => out.extend(format!("UID {}", message.uid).bytes()),
            Item::Flags => out.extend(format!("FLAGS ({})", message.flags.join(" ")).bytes()),
            Item::Size => out.extend(format!("RFC822.SIZE {}", message.raw.len()).bytes()),
            Item::Section { part, name, .. } => {
                let header = message.header();
                let bytes = match part {
                    Part::Header => header,
                    Part::Text => &message.raw[header.len()..],
                    Part::All => &message.raw[..],
                };
                out.extend(format!("{name} {{{}}}\r\n", bytes.len()).bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
}

/// The header of a message: up to and including the empty line (the whole message when
/// there is none).
fn header_of(raw: &[u8]) -> &[u8] {
    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return &raw[..end + 4];
    }
    match raw.windows(2).position(|w| w == b"\n\n") {
        Some(end) => &raw[..end + 2],
        None => raw,
    }
}

/// The header's fields as (name, unfolded value), in order.
fn fields(header: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(header);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            if !name.is_empty() && !name.contains(' ') {
                out.push((name.to_owned(), value.trim().to_owned()));
            }
        }
    }
    out
}

/// `text` as an IMAP quoted string.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// LIST's pattern match: `*` matches anything, `%` anything but the delimiter `/`.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some((b'%', rest)) => {
            (0..=name.len()).take_while(|&i| !name[..i].contains(&b'/')).any(|i| wildcard(rest, &name[i..]))
        }
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::net::TcpStream;

    /// A line-at-a-time IMAP client, over TLS unless the server wants STARTTLS.
    struct Client {
        reader: BufReader<Stream>,
        tag: u32,
    }

    impl Client {
        async fn connect(server: &FakeImap, pki: &TestPki, tls: bool) -> Client {
            let tcp: Stream = Box::new(TcpStream::connect(server.addr).await.unwrap());
            let stream = if tls { handshake(tcp, pki).await } else { tcp };
            let mut client = Client { reader: BufReader::new(stream), tag: 0 };
            assert!(client.line().await.starts_with("* OK "));
            client
        }

        async fn logged_in(server: &FakeImap, pki: &TestPki) -> Client {
            let mut client = Client::connect(server, pki, true).await;
            assert_eq!(
                client.run(r#"LOGIN "inbox@example.test" "imap secret""#).await.1,
                "OK LOGIN completed"
            );
            client
        }

        async fn line(&mut self) -> String {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line))
                .await
                .expect("a line within 5 s")
                .unwrap();
            line
        }

        async fn send(&mut self, line: &str) {
            self.reader.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        }

        /// Sends `command` with a fresh tag; returns what came before the tagged answer,
        /// as it came, and the tagged answer without its tag.
        async fn run(&mut self, command: &str) -> (String, String) {
            self.tag += 1;
            let tag = format!("t{} ", self.tag);
            self.send(&format!("{tag}{command}")).await;
            let mut before = String::new();
            loop {
                let line = self.line().await;
                if let Some(status) = line.strip_prefix(&tag) {
                    return (before, status.trim_end().to_owned());
                }
                before.push_str(&line);
            }
        }
    }

    async fn handshake(stream: Stream, pki: &TestPki) -> Stream {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").unwrap();
        Box::new(connector.connect(name, stream).await.expect("TLS to the fake IMAP server"))
    }

    fn message(probe: Option<&str>) -> Vec<u8> {
        let probe = probe.map(|p| format!("X-Probe: {p}\r\n")).unwrap_or_default();
        format!("From: a@example.test\r\n{probe}Subject: s\r\n\r\nbody\r\n").into_bytes()
    }

    #[tokio::test]
    async fn login_refuses_a_wrong_password_and_list_marks_the_junk_folder() {
        let pki = TestPki::new();
        let server = FakeImap::start(Behaviour::default(), &pki).await;
        let mut client = Client::connect(&server, &pki, true).await;
        let (caps, _) = client.run("CAPABILITY").await;
        assert_eq!(caps, "* CAPABILITY IMAP4rev1 SPECIAL-USE AUTH=PLAIN IDLE UIDPLUS\r\n");
        assert!(client.run("SELECT INBOX").await.1.starts_with("BAD "), "SELECT before LOGIN");
        let refused = client.run(r#"LOGIN "inbox@example.test" "wrong""#).await.1;
        assert_eq!(refused, "NO [AUTHENTICATIONFAILED] Authentication failed.");
        assert_eq!(client.run(r#"LOGIN "inbox@example.test" "imap secret""#).await.1, "OK LOGIN completed");
        let (list, status) = client.run(r#"LIST "" *"#).await;
        assert_eq!(status, "OK LIST completed");
        assert_eq!(
            list,
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"\r\n"
        );
        client.run("LOGOUT").await;
        let seen = server.wait_for_connections(1).await;
        assert!(seen[0].tls_established && seen[0].logged_in && seen[0].failure.is_none(), "{seen:?}");
        assert_eq!(server.lines().len(), 6);
    }

    #[tokio::test]
    async fn search_fetch_store_and_uid_expunge_touch_only_what_they_name() {
        let pki = TestPki::new();
        let server = FakeImap::start(Behaviour::default(), &pki).await;
        let store = server.store();
        for probe in [Some("abc-1"), Some("def-2"), None] {
            store.deposit("INBOX", message(probe));
        }
        let mut client = Client::logged_in(&server, &pki).await;
        let (selected, status) = client.run(r#"SELECT "INBOX""#).await;
        assert!(selected.contains("* 3 EXISTS\r\n") && selected.contains("[UIDNEXT 4]"), "{selected}");
        assert_eq!(status, "OK [READ-WRITE] SELECT completed");
        assert_eq!(client.run(r#"UID SEARCH HEADER x-probe """#).await.0, "* SEARCH 1 2\r\n");
        assert_eq!(client.run(r#"UID SEARCH HEADER X-PROBE "ABC""#).await.0, "* SEARCH 1\r\n");
        assert_eq!(client.run(r#"UID SEARCH HEADER Subject "nothing""#).await.0, "* SEARCH\r\n");

        let header = "From: a@example.test\r\nX-Probe: def-2\r\nSubject: s\r\n\r\n";
        let (fetched, _) = client.run("UID FETCH 2 (UID BODY.PEEK[HEADER])").await;
        assert_eq!(fetched, format!("* 2 FETCH (UID 2 BODY[HEADER] {{{}}}\r\n{header})\r\n", header.len()));
        let (fetched, _) = client.run("UID FETCH 2 BODY.PEEK[HEADER]").await;
        assert!(fetched.starts_with("* 2 FETCH (UID 2 BODY[HEADER] {"), "UID comes unasked: {fetched}");
        assert!(store.messages("INBOX")[1].flags.is_empty(), "PEEK sets no \\Seen");

        let (stored, status) = client.run(r"UID STORE 1:2 +FLAGS.SILENT (\Deleted)").await;
        assert_eq!((stored.as_str(), status.as_str()), ("", "OK STORE completed"));
        assert_eq!(client.run("UID EXPUNGE 2").await.0, "* 2 EXPUNGE\r\n");
        let left = store.messages("INBOX");
        assert_eq!(left.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 3]);
        assert!(left[0].has_flag(r"\Deleted"), "flagged, but not in the set: {left:?}");

        assert!(client.run(r#"EXAMINE "INBOX""#).await.1.starts_with("OK [READ-ONLY]"));
        assert!(client.run(r"UID STORE 3 +FLAGS (\Seen)").await.1.starts_with("NO [READ-ONLY]"));
        assert!(client.run("UID EXPUNGE 1").await.1.starts_with("NO [READ-ONLY]"));
        assert_eq!(store.messages("INBOX").len(), 2);
    }

    #[tokio::test]
    async fn idle_tells_of_a_message_deposited_into_the_selected_folder_only() {
        let pki = TestPki::new();
        let server = FakeImap::start(Behaviour::default(), &pki).await;
        let store = server.store();
        let mut client = Client::logged_in(&server, &pki).await;
        client.run("SELECT INBOX").await;
        client.send("t9 IDLE").await;
        assert_eq!(client.line().await, "+ idling\r\n");
        store.deposit("Junk", message(None));
        store.deposit("INBOX", message(None));
        assert_eq!(client.line().await, "* 1 EXISTS\r\n", "told of INBOX, not of Junk");
        client.send("DONE").await;
        assert_eq!(client.line().await, "t9 OK IDLE terminated\r\n");
        assert_eq!(client.run("NOOP").await.0, "", "told once");
        store.deposit("INBOX", message(None));
        assert_eq!(client.run("NOOP").await.0, "* 2 EXISTS\r\n");
    }

    #[tokio::test]
    async fn without_idle_or_uidplus_neither_is_offered_nor_accepted() {
        let pki = TestPki::new();
        let behaviour = Behaviour { idle: false, uidplus: false, ..Behaviour::default() };
        let server = FakeImap::start(behaviour, &pki).await;
        let mut client = Client::logged_in(&server, &pki).await;
        let (caps, _) = client.run("CAPABILITY").await;
        assert!(!caps.contains("IDLE") && !caps.contains("UIDPLUS"), "{caps}");
        client.run("SELECT INBOX").await;
        assert!(client.run("IDLE").await.1.starts_with("BAD "));
        assert!(client.run("UID EXPUNGE 1").await.1.starts_with("BAD "));
        assert!(client.run("EXPUNGE").await.1.starts_with("OK "));
    }

    #[tokio::test]
    async fn starttls_comes_before_login_on_a_plain_port() {
        let pki = TestPki::new();
        let server = FakeImap::start(Behaviour { tls: Tls::Starttls, ..Behaviour::default() }, &pki).await;
        let mut client = Client::connect(&server, &pki, false).await;
        assert!(client.run("CAPABILITY").await.0.contains(" STARTTLS LOGINDISABLED"));
        let refused = client.run(r#"LOGIN "inbox@example.test" "imap secret""#).await.1;
        assert!(refused.starts_with("NO [PRIVACYREQUIRED]"), "{refused}");
        assert_eq!(client.run("STARTTLS").await.1, "OK Begin TLS negotiation now");
        let stream = handshake(client.reader.into_inner(), &pki).await;
        let mut client = Client { reader: BufReader::new(stream), tag: 10 };
        assert!(!client.run("CAPABILITY").await.0.contains("STARTTLS"));
        assert_eq!(client.run(r#"LOGIN "inbox@example.test" "imap secret""#).await.1, "OK LOGIN completed");
    }

    #[tokio::test]
    async fn a_reply_set_for_a_command_answers_instead_of_it() {
        let pki = TestPki::new();
        let behaviour = Behaviour {
            replies: vec![("uid store".into(), "NO [NOPERM] Permission denied".into())],
            ..Behaviour::default()
        };
        let server = FakeImap::start(behaviour, &pki).await;
        server.store().deposit("INBOX", message(None));
        let mut client = Client::logged_in(&server, &pki).await;
        client.run("SELECT INBOX").await;
        assert_eq!(client.run(r"UID STORE 1 +FLAGS (\Deleted)").await.1, "NO [NOPERM] Permission denied");
        assert!(client.run(r"STORE 1 +FLAGS (\Deleted)").await.1.starts_with("OK "), "only UID STORE");
    }

    #[tokio::test]
    async fn a_session_past_its_line_or_command_bound_ends_as_a_failure() {
        let pki = TestPki::new();
        for (behaviour, sent, failure) in [
            (
                Behaviour { max_line_bytes: 32, ..Behaviour::default() },
                "t1 NOOP".to_owned() + &"x".repeat(40),
                "command line longer than 32 bytes",
            ),
            (
                Behaviour { max_commands: 2, ..Behaviour::default() },
                "t1 NOOP\r\nt2 NOOP\r\nt3 NOOP".to_owned(),
                "more than 2 commands",
            ),
        ] {
            let server = FakeImap::start(behaviour, &pki).await;
            let mut client = Client::connect(&server, &pki, true).await;
            client.send(&sent).await;
            let seen = server.wait_for_connections(1).await;
            assert_eq!(seen[0].failure.as_deref(), Some(failure));
        }
    }

    #[test]
    fn sets_and_patterns_match_as_imap_says() {
        let set = Set::parse("1,3:4,7:*").unwrap();
        let found: Vec<u32> = (1..=9).filter(|&n| set.contains(n, 8)).collect();
        assert_eq!(found, vec![1, 3, 4, 7, 8]);
        assert!(Set::parse("1:x").is_err());
        assert!(wildcard(b"*", b"INBOX/sub") && wildcard(b"%", b"INBOX") && !wildcard(b"%", b"INBOX/sub"));
        assert!(wildcard(b"IN*", b"INBOX") && !wildcard(b"Junk", b"INBOX"));
        let tokens = tokenize(r#"t1 UID FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (A B)]) "a \"q\"""#).unwrap();
        assert_eq!(tokens[4], Tok::List("UID BODY.PEEK[HEADER.FIELDS (A B)]".into()));
        assert_eq!(tokens[5], Tok::Str(r#"a "q""#.into()));
        assert!(tokenize("t1 LOGIN {5}").is_err());
    }
}
