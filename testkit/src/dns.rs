//! A fake name server for hermetic tests, on 127.0.0.1:0 over UDP and TCP (the same port):
//! a zone held in memory that the test may change while it runs, and names that answer
//! SERVFAIL or not at all. Unknown names are NXDOMAIN; a known name without the type asked
//! is NODATA; both carry an SOA whose minimum is the zone's TTL, so a resolver caches them
//! for that long.
//!
//! [`FakeDns::start`] serves all of that unsigned, as an authoritative server for `test.`
//! (the SOA of its negative answers), and does no DNSSEC. [`FakeDns::start_signed`] serves
//! the same records signed, with keys made at test time (ECDSAP256SHA256):
//!
//! - the root zone `.` holds every name not at or below a declared zone, signed by the
//!   root key, which the test hands to the resolver as its trust anchor
//!   ([`FakeDns::trust_anchor_file`]);
//! - [`FakeDns::zone`] declares a zone, delegated from the closest declared zone above it
//!   (or from the root), as secure, insecure (unsigned, proven so by the parent), bogus or
//!   expired ([`ZoneSecurity`]);
//! - each apex answers SOA, NS and DNSKEY, the parent answers DS, and signatures (RRSIG)
//!   and denial proofs (an NSEC chain; no NSEC3, no wildcards) come when the query sets DO.
//!
//! The server may also pretend to be something other than an authoritative server
//! ([`ServerMode`]: a forwarder that strips DNSSEC, or a validating recursive resolver that
//! sets the AD bit), and may break the size rules of UDP ([`UdpOversize`]). Every query is
//! logged, so a test can assert which lookups were made ([`FakeDns::queries_of`]).

mod signed;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TLSA, TXT};
use hickory_proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The record types of [`FakeDns::queries_of`], re-exported so that a test needs no DNS
/// crate of its own to name one.
pub use hickory_proto::rr::RecordType;
pub use signed::ZoneSecurity;

/// One record of the fake zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rr {
    /// An A or AAAA record, after the address's family.
    Addr(IpAddr),
    /// preference, exchange; the exchange is taken as a name even when it reads as an
    /// address (`"192.0.2.1"` is served as the name `192.0.2.1.`), and `"."` is the null MX.
    Mx(u16, String),
    /// An alias; the server follows it within its own data, as an authoritative one does.
    Cname(String),
    /// One TXT record of one string.
    Txt(String),
    /// usage, selector, matching type, data; signed only by a [`FakeDns::start_signed`]
    /// server, in a zone that signs.
    Tlsa(u8, u8, u8, Vec<u8>),
}

/// What a name does besides holding records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers from its records (the default).
    Answer,
    /// Answers SERVFAIL, whatever the type asked.
    Servfail,
    /// Never answers: the resolver times out.
    Silent,
}

/// Which kind of server the fake pretends to be, so that a test can put each kind of
/// resolver an exporter meets in front of the same data. Changeable while it runs
/// ([`FakeDns::set_mode`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerMode {
    /// An authoritative server (the default): AA set, signatures and denial proofs added
    /// to the answers of signed zones when the query sets DO.
    #[default]
    Authoritative,
    /// A forwarder without DNSSEC that answers from local data, like dnsmasq: never an
    /// RRSIG, NSEC, NSEC3, DNSKEY or DS in an answer whatever DO says, and REFUSED for any
    /// query about the root name `.` (which it does not own), `. DNSKEY` included.
    Strip,
    /// A forwarder that asks its upstream without DO: it passes DNSKEY and DS records on
    /// (and answers `.`), but never a signature or a denial proof (RRSIG, NSEC, NSEC3).
    StripSignatures,
    /// A validating recursive resolver, like unbound: answers with the AD bit when the
    /// chain from the root to the answer is secure and the query sets DO or AD; answers
    /// SERVFAIL for names in a bogus or expired zone unless the query sets CD, in which
    /// case it answers them as they are (without AD). AA is clear.
    Validating,
}

/// What the server does over UDP with an answer larger than the client can take (its EDNS
/// payload size, or 512 bytes without EDNS). TCP always carries the whole answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UdpOversize {
    /// What RFC 1035 and 6891 ask (the default): an empty answer with TC set, so the
    /// client asks again over TCP.
    #[default]
    Truncate,
    /// A broken server: the whole answer in one datagram, without TC; the client's receive
    /// buffer cuts it and the cut message does not decode.
    SendWhole,
}

/// How a query came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One datagram.
    Udp,
    /// A message with its 2-byte length on a TCP connection.
    Tcp,
}

/// One query the server received and could decode, for tests that assert which lookups
/// were made (and how).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedQuery {
    /// The name asked, lowercase and without the final dot (`""` for the root), as given
    /// to [`FakeDns::add`].
    pub name: String,
    /// The type asked.
    pub rtype: RecordType,
    /// UDP or TCP.
    pub transport: Transport,
    /// The query's EDNS DO bit: it asked for signatures.
    pub dnssec_ok: bool,
    /// The query's AD bit: it wants to learn whether the answer is authentic.
    pub authentic_data: bool,
    /// The query's CD bit: it asks a validating resolver not to check.
    pub checking_disabled: bool,
}

#[derive(Default)]
struct Zone {
    records: BTreeMap<String, Vec<Rr>>,
    behaviours: BTreeMap<String, Behaviour>,
    ttl: u32,
    /// The SOA minimum of negative answers, when it differs from `ttl`.
    negative_ttl: Option<u32>,
}

impl Zone {
    fn negative_ttl(&self) -> u32 {
        self.negative_ttl.unwrap_or(self.ttl)
    }
}

/// Everything the serving tasks read, under one lock.
struct State {
    zone: Zone,
    mode: ServerMode,
    oversize: UdpOversize,
    /// `Some` for a [`FakeDns::start_signed`] server: the keys and declared zones.
    signing: Option<signed::Signing>,
}

/// What the serving tasks share with the test.
struct Shared {
    state: Mutex<State>,
    /// Every datagram or TCP message received, decodable or not (what `queries()` counts).
    received: AtomicU64,
    log: Mutex<Vec<LoggedQuery>>,
}

/// The running fake server; it stops when dropped.
pub struct FakeDns {
    /// The address of both listeners: UDP and TCP on the same port of 127.0.0.1.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Binds UDP on a free port of 127.0.0.1, then TCP on the same port (trying again on
/// another port when that one's TCP side is taken).
async fn bind() -> (UdpSocket, TcpListener) {
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind the fake name server (UDP)");
        let addr = udp.local_addr().expect("local address");
        match TcpListener::bind(addr).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) => last = Some(e),
        }
    }
    panic!("bind the fake name server (TCP on the UDP port): {last:?}");
}

impl FakeDns {
    /// Starts serving an empty zone whose answers carry `ttl` seconds, unsigned.
    pub async fn start(ttl: u32) -> FakeDns {
        FakeDns::launch(ttl, None).await
    }

    /// Starts serving an empty zone whose answers carry `ttl` seconds, signed: a root key
    /// is made now, and every name not under a zone declared with [`FakeDns::zone`] is in
    /// the root zone `.`, signed by it. Give the resolver [`FakeDns::trust_anchor_file`].
    pub async fn start_signed(ttl: u32) -> FakeDns {
        FakeDns::launch(ttl, Some(signed::Signing::new())).await
    }

    async fn launch(ttl: u32, signing: Option<signed::Signing>) -> FakeDns {
        let (udp, tcp) = bind().await;
        let addr = udp.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                zone: Zone { ttl, ..Zone::default() },
                mode: ServerMode::default(),
                oversize: UdpOversize::default(),
                signing,
            }),
            received: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(udp, tcp, shared.clone()));
        FakeDns { addr, shared, task }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// Adds a record to `name`.
    pub fn add(&self, name: &str, rr: Rr) -> &FakeDns {
        self.state().zone.records.entry(key(name)).or_default().push(rr);
        self
    }

    /// Removes every record of `name` that `keep` refuses.
    pub fn retain(&self, name: &str, keep: impl Fn(&Rr) -> bool) {
        if let Some(rrs) = self.state().zone.records.get_mut(&key(name)) {
            rrs.retain(|rr| keep(rr));
        }
    }

    /// Makes `name` answer SERVFAIL, or nothing at all.
    pub fn set_behaviour(&self, name: &str, behaviour: Behaviour) {
        self.state().zone.behaviours.insert(key(name), behaviour);
    }

    /// Makes negative answers (NXDOMAIN, NODATA) cacheable for `ttl` seconds instead of
    /// the zone's TTL.
    pub fn set_negative_ttl(&self, ttl: u32) {
        self.state().zone.negative_ttl = Some(ttl);
    }

    /// Declares `apex` a zone of its own, delegated from the closest declared zone above
    /// it (or from the root), with a key made now; `security` says how the delegation and
    /// the signatures look to a validator. Records added at or below `apex` (before or
    /// after) belong to it. Panics on a server from [`FakeDns::start`], which signs nothing.
    pub fn zone(&self, apex: &str, security: ZoneSecurity) -> &FakeDns {
        self.state()
            .signing
            .as_mut()
            .expect("zones are declared on a server from FakeDns::start_signed")
            .declare(&key(apex), security);
        self
    }

    /// The trust anchor of the signed root: one line `. 3600 IN DNSKEY 257 3 13 <base64>`,
    /// as hickory's `TrustAnchors::from_str` (and the exporter's `dns.trust_anchors`)
    /// read it. Panics on a server from [`FakeDns::start`].
    pub fn trust_anchor(&self) -> String {
        self.state().signing.as_ref().expect("a server from FakeDns::start_signed").trust_anchor()
    }

    /// Writes [`FakeDns::trust_anchor`] to `path`, for the exporter's
    /// `dns.trust_anchors`; panics when it cannot.
    pub fn trust_anchor_file(&self, path: &Path) {
        let line = self.trust_anchor();
        std::fs::write(path, format!("{line}\n"))
            .unwrap_or_else(|e| panic!("write the trust anchor to {}: {e}", path.display()));
    }

    /// Makes the server answer as another kind of server from the next query on.
    pub fn set_mode(&self, mode: ServerMode) {
        self.state().mode = mode;
    }

    /// Chooses what an answer too large for UDP does (from the next query on).
    pub fn set_udp_oversize(&self, oversize: UdpOversize) {
        self.state().oversize = oversize;
    }

    /// How many queries came in, over UDP and TCP, decodable or not.
    pub fn queries(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// How many decodable queries asked for `rtype`, whatever the name: `queries_of(TLSA)`
    /// is 0 when nothing looked DANE up.
    pub fn queries_of(&self, rtype: RecordType) -> u64 {
        self.shared.log.lock().unwrap().iter().filter(|q| q.rtype == rtype).count() as u64
    }

    /// How many decodable queries asked for `rtype` at `name` (any case, final dot or not).
    pub fn queries_for(&self, name: &str, rtype: RecordType) -> u64 {
        let name = key(name);
        self.shared.log.lock().unwrap().iter().filter(|q| q.rtype == rtype && q.name == name).count() as u64
    }

    /// How many decodable queries came over TCP: the client retried after TC, or asked
    /// over TCP from the start.
    pub fn tcp_queries(&self) -> u64 {
        self.shared.log.lock().unwrap().iter().filter(|q| q.transport == Transport::Tcp).count() as u64
    }

    /// Every decodable query so far, in the order received.
    pub fn query_log(&self) -> Vec<LoggedQuery> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(udp: UdpSocket, tcp: TcpListener, shared: Arc<Shared>) {
    tokio::join!(serve_udp(udp, shared.clone()), serve_tcp(tcp, shared));
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
        let Some(bytes) = handle(&buf[..n], Transport::Udp, &shared) else { continue };
        let _ = socket.send_to(&bytes, peer).await;
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    // Dropped with this future when the server stops, which aborts every connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { return };
                connections.spawn(serve_connection(stream, shared.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Answers each length-prefixed query on one connection until the client closes it.
async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Some(bytes) = handle(&buf, Transport::Tcp, &shared) else { continue };
        let Ok(len) = u16::try_from(bytes.len()) else { continue };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// Counts and logs one received message and makes the bytes to send back, or `None` to
/// stay silent.
fn handle(bytes: &[u8], transport: Transport, shared: &Shared) -> Option<Vec<u8>> {
    shared.received.fetch_add(1, Ordering::Relaxed);
    let query = Message::from_vec(bytes).ok()?;
    if let Some(question) = query.queries.first() {
        shared.log.lock().unwrap().push(LoggedQuery {
            name: key(&question.name().to_ascii()),
            rtype: question.query_type(),
            transport,
            dnssec_ok: dnssec_ok(&query),
            authentic_data: query.metadata.authentic_data,
            checking_disabled: query.metadata.checking_disabled,
        });
    }
    let (reply, oversize) = {
        let state = shared.state.lock().unwrap();
        (respond(&query, &state)?, state.oversize)
    };
    let bytes = reply.to_vec().ok()?;
    if transport == Transport::Udp
        && oversize == UdpOversize::Truncate
        && bytes.len() > usize::from(query.max_payload())
    {
        let mut cut = Message::response(reply.metadata.id, reply.metadata.op_code);
        cut.metadata = reply.metadata;
        cut.metadata.truncation = true;
        for question in &reply.queries {
            cut.add_query(question.clone());
        }
        if let Some(edns) = reply.edns.clone() {
            cut.set_edns(edns);
        }
        return cut.to_vec().ok();
    }
    Some(bytes)
}

/// Whether `query` sets the EDNS DO bit.
fn dnssec_ok(query: &Message) -> bool {
    query.edns.as_ref().is_some_and(|edns| edns.flags().dnssec_ok)
}

/// The reply to `query` from the server in its current mode, or `None` to stay silent.
fn respond(query: &Message, state: &State) -> Option<Message> {
    let question = query.queries.first()?;
    let name = key(&question.name().to_ascii());
    if state.mode == ServerMode::Strip && name.is_empty() {
        let mut reply = header(query);
        reply.metadata.authoritative = false;
        reply.metadata.response_code = ResponseCode::Refused;
        return Some(reply);
    }
    let (mut reply, verdict) = match &state.signing {
        None => (answer(query, &state.zone)?, signed::Verdict::Insecure),
        Some(signing) => signing.answer(query, &state.zone)?,
    };
    let is_dnssec = |r: &Record, with_keys: bool| {
        matches!(r.record_type(), RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
            || (with_keys && matches!(r.record_type(), RecordType::DNSKEY | RecordType::DS))
    };
    match state.mode {
        ServerMode::Authoritative => {}
        ServerMode::Strip | ServerMode::StripSignatures => {
            let with_keys = state.mode == ServerMode::Strip;
            reply.metadata.authoritative = false;
            reply.answers.retain(|r| !is_dnssec(r, with_keys));
            reply.authorities.retain(|r| !is_dnssec(r, with_keys));
            reply.additionals.retain(|r| !is_dnssec(r, with_keys));
            if let Some(edns) = reply.edns.as_mut() {
                edns.set_dnssec_ok(false);
            }
        }
        ServerMode::Validating => {
            reply.metadata.authoritative = false;
            let asked = dnssec_ok(query) || query.metadata.authentic_data;
            match verdict {
                signed::Verdict::Bogus if !query.metadata.checking_disabled => {
                    let mut failure = header(query);
                    failure.metadata.authoritative = false;
                    failure.metadata.response_code = ResponseCode::ServFail;
                    return Some(failure);
                }
                signed::Verdict::Secure if asked => reply.metadata.authentic_data = true,
                _ => {}
            }
        }
    }
    Some(reply)
}

/// An empty response to `query`: its id, AA, RD, RA and the question (no OPT record: the
/// signed server adds its own).
fn header(query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    if let Some(question) = query.queries.first() {
        reply.add_query(question.clone());
    }
    reply
}

/// The behaviour of `name`, for both kinds of server.
fn behaviour(zone: &Zone, name: &str) -> Behaviour {
    zone.behaviours.get(name).copied().unwrap_or(Behaviour::Answer)
}

/// An owner name from a zone key.
fn owner(name: &str) -> Name {
    Name::from_ascii(format!("{name}.")).expect("a valid test name")
}

/// The record data of `rr` when it answers a query for `wanted` (`None`: another type).
fn rdata(rr: &Rr, wanted: RecordType) -> Option<RData> {
    Some(match (rr, wanted) {
        (Rr::Addr(IpAddr::V4(a)), RecordType::A) => RData::A(A(*a)),
        (Rr::Addr(IpAddr::V6(a)), RecordType::AAAA) => RData::AAAA(AAAA(*a)),
        (Rr::Mx(preference, host), RecordType::MX) => {
            let exchange = if host == "." { Name::root() } else { owner(&key(host)) };
            RData::MX(MX::new(*preference, exchange))
        }
        (Rr::Txt(text), RecordType::TXT) => RData::TXT(TXT::new(vec![text.clone()])),
        (Rr::Tlsa(usage, selector, matching, data), RecordType::TLSA) => {
            RData::TLSA(TLSA::new((*usage).into(), (*selector).into(), (*matching).into(), data.clone()))
        }
        (Rr::Cname(target), RecordType::CNAME) => RData::CNAME(CNAME(owner(&key(target)))),
        _ => return None,
    })
}

/// The type of record `rr` is.
fn rtype(rr: &Rr) -> RecordType {
    match rr {
        Rr::Addr(IpAddr::V4(_)) => RecordType::A,
        Rr::Addr(IpAddr::V6(_)) => RecordType::AAAA,
        Rr::Mx(..) => RecordType::MX,
        Rr::Cname(_) => RecordType::CNAME,
        Rr::Txt(_) => RecordType::TXT,
        Rr::Tlsa(..) => RecordType::TLSA,
    }
}

/// The unsigned server's reply to `query`, or `None` to stay silent.
fn answer(query: &Message, zone: &Zone) -> Option<Message> {
    let question = query.queries.first()?.clone();
    let mut reply = header(query);
    let mut name = key(&question.name().to_ascii());
    match behaviour(zone, &name) {
        Behaviour::Silent => return None,
        Behaviour::Servfail => {
            reply.metadata.response_code = ResponseCode::ServFail;
            return Some(reply);
        }
        Behaviour::Answer => {}
    }
    let wanted = question.query_type();
    // Follows CNAMEs inside the zone, as an authoritative server does for its own names.
    for _ in 0..8 {
        let Some(rrs) = zone.records.get(&name) else {
            if reply.answers.is_empty() {
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.add_authority(soa(zone.negative_ttl()));
            }
            return Some(reply);
        };
        if let Some(Rr::Cname(target)) = rrs.iter().find(|rr| matches!(rr, Rr::Cname(_))) {
            if wanted != RecordType::CNAME {
                let data = RData::CNAME(CNAME(owner(&key(target))));
                reply.add_answer(Record::from_rdata(owner(&name), zone.ttl, data));
                name = key(target);
                continue;
            }
        }
        for rr in rrs {
            if matches!(rr, Rr::Cname(_)) {
                // A CNAME asked for by type is answered NODATA, as it always was here.
                continue;
            }
            let Some(data) = rdata(rr, wanted) else { continue };
            reply.add_answer(Record::from_rdata(owner(&name), zone.ttl, data));
        }
        if reply.answers.is_empty() {
            reply.add_authority(soa(zone.negative_ttl()));
        }
        return Some(reply);
    }
    Some(reply)
}

/// The SOA record of a negative answer (NXDOMAIN, or a name without the type asked): its
/// minimum, the zone's TTL, is how long a resolver may cache the absence (RFC 2308).
fn soa(ttl: u32) -> Record {
    let apex = Name::from_ascii("test.").expect("a valid name");
    let data = SOA::new(
        apex.clone(),
        Name::from_ascii("hostmaster.test.").expect("a valid name"),
        1,
        3600,
        600,
        86_400,
        ttl,
    );
    Record::from_rdata(apex, ttl, RData::SOA(data))
}

#[cfg(test)]
mod tests;
