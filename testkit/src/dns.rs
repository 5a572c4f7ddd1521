//! A fake authoritative name server for hermetic tests: UDP on 127.0.0.1:0, a zone held in
//! memory that the test may change while it runs, and names that answer SERVFAIL or not
//! at all. Unknown names are NXDOMAIN; a known name without the type asked is NODATA; both
//! carry an SOA whose minimum is the zone's TTL, so a resolver caches them for that long.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TLSA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// One record of the fake zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rr {
    Addr(IpAddr),
    Mx(u16, String),
    Cname(String),
    Txt(String),
    /// usage, selector, matching type, data (unsigned: the fake server does no DNSSEC).
    Tlsa(u8, u8, u8, Vec<u8>),
}

/// What a name does besides holding records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    Servfail,
    /// Never answers: the resolver times out.
    Silent,
}

#[derive(Default)]
struct Zone {
    records: BTreeMap<String, Vec<Rr>>,
    behaviours: BTreeMap<String, Behaviour>,
    ttl: u32,
    /// The SOA minimum of negative answers, when it differs from `ttl`.
    negative_ttl: Option<u32>,
}

/// The running fake server; it stops when dropped.
pub struct FakeDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FakeDns {
    /// Starts serving an empty zone whose answers carry `ttl` seconds.
    pub async fn start(ttl: u32) -> FakeDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind the fake name server");
        let addr = socket.local_addr().expect("local address");
        let zone = Arc::new(Mutex::new(Zone { ttl, ..Zone::default() }));
        let queries = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(socket, zone.clone(), queries.clone()));
        FakeDns { addr, zone, queries, task }
    }

    /// Adds a record to `name`.
    pub fn add(&self, name: &str, rr: Rr) -> &FakeDns {
        self.zone.lock().unwrap().records.entry(key(name)).or_default().push(rr);
        self
    }

    /// Removes every record of `name` that `keep` refuses.
    pub fn retain(&self, name: &str, keep: impl Fn(&Rr) -> bool) {
        if let Some(rrs) = self.zone.lock().unwrap().records.get_mut(&key(name)) {
            rrs.retain(|rr| keep(rr));
        }
    }

    /// Makes `name` answer SERVFAIL, or nothing at all.
    pub fn set_behaviour(&self, name: &str, behaviour: Behaviour) {
        self.zone.lock().unwrap().behaviours.insert(key(name), behaviour);
    }

    /// Makes negative answers (NXDOMAIN, NODATA) cacheable for `ttl` seconds instead of
    /// the zone's TTL.
    pub fn set_negative_ttl(&self, ttl: u32) {
        self.zone.lock().unwrap().negative_ttl = Some(ttl);
    }

    /// How many queries came in.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>, queries: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
        queries.fetch_add(1, Ordering::Relaxed);
        let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
        let Some(reply) = answer(&query, &zone.lock().unwrap()) else { continue };
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

/// The reply to `query`, or `None` to stay silent.
fn answer(query: &Message, zone: &Zone) -> Option<Message> {
    let question = query.queries.first()?.clone();
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let mut name = key(&question.name().to_ascii());
    match zone.behaviours.get(&name).copied().unwrap_or(Behaviour::Answer) {
        Behaviour::Silent => return None,
        Behaviour::Servfail => {
            reply.metadata.response_code = ResponseCode::ServFail;
            return Some(reply);
        }
        Behaviour::Answer => {}
    }
    let wanted = question.query_type();
    let owner = |n: &str| Name::from_ascii(format!("{n}.")).expect("a valid test name");
    // Follows CNAMEs inside the zone, as an authoritative server does for its own names.
    for _ in 0..8 {
        let Some(rrs) = zone.records.get(&name) else {
            if reply.answers.is_empty() {
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.add_authority(soa(zone.negative_ttl.unwrap_or(zone.ttl)));
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
            let data = match (rr, wanted) {
                (Rr::Addr(IpAddr::V4(a)), RecordType::A) => RData::A(A(*a)),
                (Rr::Addr(IpAddr::V6(a)), RecordType::AAAA) => RData::AAAA(AAAA(*a)),
                (Rr::Mx(preference, host), RecordType::MX) => {
                    let exchange = if host == "." { Name::root() } else { owner(&key(host)) };
                    RData::MX(MX::new(*preference, exchange))
                }
                (Rr::Txt(text), RecordType::TXT) => RData::TXT(TXT::new(vec![text.clone()])),
                (Rr::Tlsa(usage, selector, matching, data), RecordType::TLSA) => RData::TLSA(TLSA::new(
                    (*usage).into(),
                    (*selector).into(),
                    (*matching).into(),
                    data.clone(),
                )),
                _ => continue,
            };
            reply.add_answer(Record::from_rdata(owner(&name), zone.ttl, data));
        }
        if reply.answers.is_empty() {
            reply.add_authority(soa(zone.negative_ttl.unwrap_or(zone.ttl)));
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
