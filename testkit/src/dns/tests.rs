//! The fake name server queried through hickory's resolver (the one the exporter uses) and
//! through raw messages, so that what its modes promise is checked where it is defined.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::dnssec::{Proof, TrustAnchors};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::TokioResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::*;

/// A resolver of `dns` alone, without cache; validating under `anchor` when given; over
/// TCP only when asked.
fn resolver(dns: &FakeDns, anchor: Option<String>, tcp_only: bool) -> TokioResolver {
    let ip = dns.addr.ip();
    let mut server = if tcp_only { NameServerConfig::tcp(ip) } else { NameServerConfig::udp_and_tcp(ip) };
    for connection in &mut server.connections {
        connection.port = dns.addr.port();
    }
    let config = ResolverConfig::from_parts(None, vec![], vec![server]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    options.cache_size = 0;
    if let Some(anchor) = anchor {
        let anchors = TrustAnchors::from_str(&anchor).expect("the fake's trust anchor parses");
        builder = builder.with_trust_anchor(Arc::new(anchors));
        options.validate = true;
    }
    *builder.options_mut() = options;
    builder.build().expect("a resolver")
}

/// The proofs of the records of type `rtype` in `lookup`.
fn proofs(lookup: &Lookup, rtype: RecordType) -> Vec<Proof> {
    lookup.answers().iter().filter(|r| r.record_type() == rtype).map(|r| r.proof).collect()
}

fn is_bogus(result: &Result<Lookup, NetError>) -> bool {
    matches!(result, Err(NetError::Dns(DnsError::DnssecBogus)))
}

/// The response code of a lookup that found nothing, or `None` when it did not end so.
fn no_records(result: &Result<Lookup, NetError>) -> Option<ResponseCode> {
    match result {
        Err(NetError::Dns(DnsError::NoRecordsFound(no))) => Some(no.response_code),
        _ => None,
    }
}

/// A query for `name` `rtype` with RD, EDNS (payload 1232, DO as given) and AD/CD as given.
fn query(name: &str, rtype: RecordType, dnssec_ok: bool, ad: bool, cd: bool) -> Message {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.metadata.recursion_desired = true;
    message.metadata.authentic_data = ad;
    message.metadata.checking_disabled = cd;
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
    message.set_edns(edns);
    message
}

/// Sends `message` in one datagram and returns the raw reply (up to 64 KiB).
async fn udp(addr: SocketAddr, message: &Message) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&message.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await.unwrap().unwrap();
    buf.truncate(n);
    buf
}

/// Sends `message` over TCP and returns the decoded reply.
async fn tcp(addr: SocketAddr, message: &Message) -> Message {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let bytes = message.to_vec().unwrap();
    stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

async fn ask(addr: SocketAddr, message: &Message) -> Message {
    Message::from_vec(&udp(addr, message).await).unwrap()
}

fn types(records: &[Record]) -> Vec<RecordType> {
    records.iter().map(Record::record_type).collect()
}

/// A signed server with one zone of each kind (two of them inside the secure one), an MX
/// at each apex, an MX in the root zone, and a TLSA record below each MX host.
async fn signed() -> FakeDns {
    let dns = FakeDns::start_signed(60).await;
    dns.zone("secure.test", ZoneSecurity::Secure)
        .zone("insecure.test", ZoneSecurity::Insecure)
        .zone("bogus.test", ZoneSecurity::Bogus)
        .zone("expired.test", ZoneSecurity::Expired)
        .zone("sub.secure.test", ZoneSecurity::Secure)
        .zone("unsigned.secure.test", ZoneSecurity::Insecure);
    let domains =
        ["secure.test", "insecure.test", "bogus.test", "expired.test", "plain.test", "sub.secure.test"];
    for domain in domains.into_iter().chain(["unsigned.secure.test"]) {
        dns.add(domain, Rr::Mx(10, format!("mx.{domain}")))
            .add(&format!("mx.{domain}"), Rr::Addr("127.0.0.1".parse().unwrap()))
            .add(&format!("_25._tcp.mx.{domain}"), Rr::Tlsa(3, 1, 1, vec![7; 32]));
    }
    dns
}

#[tokio::test]
async fn a_validating_resolver_gets_the_verdict_each_zone_was_declared_with() {
    let dns = signed().await;
    let anchor = dns.trust_anchor();
    assert!(anchor.starts_with(". 3600 IN DNSKEY 257 3 13 "), "{anchor}");
    for tcp_only in [false, true] {
        let validating = resolver(&dns, Some(anchor.clone()), tcp_only);
        for (name, rtype) in [
            ("secure.test.", RecordType::MX),
            ("plain.test.", RecordType::MX),
            ("mx.secure.test.", RecordType::A),
            ("_25._tcp.mx.secure.test.", RecordType::TLSA),
            ("_25._tcp.mx.plain.test.", RecordType::TLSA),
            ("sub.secure.test.", RecordType::MX),
        ] {
            let lookup = validating.lookup(name, rtype).await;
            let lookup = lookup.unwrap_or_else(|e| panic!("{name} {rtype} (tcp only: {tcp_only}): {e:?}"));
            let proofs = proofs(&lookup, rtype);
            assert!(!proofs.is_empty() && proofs.iter().all(|p| *p == Proof::Secure), "{name}: {proofs:?}");
        }
        for (name, rtype) in [
            ("insecure.test.", RecordType::MX),
            ("_25._tcp.mx.insecure.test.", RecordType::TLSA),
            ("unsigned.secure.test.", RecordType::MX),
        ] {
            let lookup = validating.lookup(name, rtype).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(proofs(&lookup, rtype), vec![Proof::Insecure], "{name}");
        }
        for name in ["bogus.test.", "expired.test."] {
            let lookup = validating.lookup(name, RecordType::MX).await;
            assert!(is_bogus(&lookup), "{name}: {lookup:?}");
        }
        let lookup = validating.lookup("_25._tcp.mx.bogus.test.", RecordType::TLSA).await;
        assert!(is_bogus(&lookup), "{lookup:?}");
    }
    // An unsigned server under the same anchor: nothing validates.
    let unsigned = FakeDns::start(60).await;
    unsigned.add("plain.test", Rr::Mx(10, "mx.plain.test".into()));
    let lookup = resolver(&unsigned, Some(anchor), false).lookup("plain.test.", RecordType::MX).await;
    assert!(is_bogus(&lookup), "{lookup:?}");
}

#[tokio::test]
async fn negative_answers_of_signed_zones_are_proven() {
    let dns = signed().await;
    let validating = resolver(&dns, Some(dns.trust_anchor()), false);
    for (name, rtype, code) in [
        // NODATA at a name that holds other types, in a declared zone and in the root.
        ("secure.test.", RecordType::TLSA, ResponseCode::NoError),
        ("plain.test.", RecordType::TXT, ResponseCode::NoError),
        ("_25._tcp.mx.secure.test.", RecordType::A, ResponseCode::NoError),
        // NODATA at empty non-terminals.
        ("_tcp.mx.secure.test.", RecordType::TLSA, ResponseCode::NoError),
        ("test.", RecordType::MX, ResponseCode::NoError),
        // NXDOMAIN below an apex, beside one, and at a new top-level name.
        ("_26._tcp.mx.secure.test.", RecordType::TLSA, ResponseCode::NXDomain),
        ("nothing.secure.test.", RecordType::MX, ResponseCode::NXDomain),
        ("nothing.test.", RecordType::MX, ResponseCode::NXDomain),
        ("zzz.test.", RecordType::MX, ResponseCode::NXDomain),
        ("a.nothing.", RecordType::MX, ResponseCode::NXDomain),
        // Unsigned zone: the absence is insecure, not bogus.
        ("nothing.insecure.test.", RecordType::MX, ResponseCode::NXDomain),
        ("insecure.test.", RecordType::TLSA, ResponseCode::NoError),
    ] {
        let lookup = validating.lookup(name, rtype).await;
        assert_eq!(no_records(&lookup), Some(code), "{name} {rtype}: {lookup:?}");
    }
    dns.set_negative_ttl(5);
    let lookup = validating.lookup("_26._tcp.mx.secure.test.", RecordType::TLSA).await;
    match lookup {
        Err(NetError::Dns(DnsError::NoRecordsFound(no))) => {
            let soa = no.soa.expect("the SOA of the proof");
            assert_eq!((soa.ttl, soa.data.minimum), (5, 5));
        }
        other => panic!("{other:?}"),
    }
    let lookup = validating.lookup("nothing.bogus.test.", RecordType::MX).await;
    assert!(is_bogus(&lookup), "{lookup:?}");
}

#[tokio::test]
async fn signatures_and_proofs_come_only_with_do() {
    let dns = signed().await;
    let plain = ask(dns.addr, &query("secure.test.", RecordType::MX, false, false, false)).await;
    assert_eq!(types(&plain.answers), vec![RecordType::MX]);
    assert!(plain.metadata.authoritative);
    let signed = ask(dns.addr, &query("secure.test.", RecordType::MX, true, false, false)).await;
    assert_eq!(types(&signed.answers), vec![RecordType::MX, RecordType::RRSIG]);
    assert!(signed.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
    let nodata = ask(dns.addr, &query("secure.test.", RecordType::TLSA, true, false, false)).await;
    assert_eq!(
        types(&nodata.authorities),
        vec![RecordType::SOA, RecordType::RRSIG, RecordType::NSEC, RecordType::RRSIG]
    );
    let nodata = ask(dns.addr, &query("secure.test.", RecordType::TLSA, false, false, false)).await;
    assert_eq!(types(&nodata.authorities), vec![RecordType::SOA]);
    // The insecure zone signs nothing; its parent proves that with a signed NSEC.
    let insecure = ask(dns.addr, &query("insecure.test.", RecordType::MX, true, false, false)).await;
    assert_eq!(types(&insecure.answers), vec![RecordType::MX]);
    let ds = ask(dns.addr, &query("insecure.test.", RecordType::DS, true, false, false)).await;
    assert_eq!(ds.metadata.response_code, ResponseCode::NoError);
    assert!(ds.answers.is_empty());
    assert!(types(&ds.authorities).contains(&RecordType::NSEC), "{:?}", ds.authorities);
    let ds = ask(dns.addr, &query("secure.test.", RecordType::DS, true, false, false)).await;
    assert_eq!(types(&ds.answers), vec![RecordType::DS, RecordType::RRSIG]);
    let keys = ask(dns.addr, &query(".", RecordType::DNSKEY, true, false, false)).await;
    assert_eq!(types(&keys.answers), vec![RecordType::DNSKEY, RecordType::RRSIG]);
}

#[tokio::test]
async fn stripping_modes_make_every_signed_answer_fail_validation() {
    let dns = signed().await;
    let validating = resolver(&dns, Some(dns.trust_anchor()), false);
    for mode in [ServerMode::Strip, ServerMode::StripSignatures] {
        dns.set_mode(mode);
        for name in ["secure.test.", "plain.test.", "insecure.test.", "bogus.test."] {
            let lookup = validating.lookup(name, RecordType::MX).await;
            assert!(is_bogus(&lookup), "{mode:?} {name}: {lookup:?}");
        }
        let lookup = validating.lookup("_25._tcp.mx.secure.test.", RecordType::TLSA).await;
        assert!(is_bogus(&lookup), "{mode:?}: {lookup:?}");
        let answer = ask(dns.addr, &query("secure.test.", RecordType::MX, true, true, false)).await;
        assert_eq!(types(&answer.answers), vec![RecordType::MX], "{mode:?}");
        assert!(!answer.metadata.authentic_data);
        let nodata = ask(dns.addr, &query("secure.test.", RecordType::TLSA, true, false, false)).await;
        assert_eq!(types(&nodata.authorities), vec![RecordType::SOA], "{mode:?}");
    }
    dns.set_mode(ServerMode::Strip);
    let root = ask(dns.addr, &query(".", RecordType::DNSKEY, true, true, false)).await;
    assert_eq!(root.metadata.response_code, ResponseCode::Refused);
    let keys = ask(dns.addr, &query("secure.test.", RecordType::DNSKEY, true, true, false)).await;
    assert!(keys.answers.is_empty(), "{:?}", keys.answers);
    dns.set_mode(ServerMode::StripSignatures);
    let root = ask(dns.addr, &query(".", RecordType::DNSKEY, true, true, false)).await;
    assert_eq!(root.metadata.response_code, ResponseCode::NoError);
    assert_eq!(types(&root.answers), vec![RecordType::DNSKEY]);
    // Back to authoritative: validation works again.
    dns.set_mode(ServerMode::Authoritative);
    let lookup = validating.lookup("secure.test.", RecordType::MX).await.unwrap();
    assert_eq!(proofs(&lookup, RecordType::MX), vec![Proof::Secure]);
}

#[tokio::test]
async fn validating_mode_sets_ad_on_secure_answers_and_fails_bogus_ones() {
    let dns = signed().await;
    dns.set_mode(ServerMode::Validating);
    let secure = ask(dns.addr, &query("secure.test.", RecordType::MX, true, true, false)).await;
    assert_eq!(secure.metadata.response_code, ResponseCode::NoError);
    assert!(secure.metadata.authentic_data);
    assert!(!secure.metadata.authoritative);
    assert_eq!(types(&secure.answers), vec![RecordType::MX, RecordType::RRSIG]);
    // AD alone asks for it too; neither DO nor AD does not.
    let ad_only = ask(dns.addr, &query("plain.test.", RecordType::MX, false, true, false)).await;
    assert!(ad_only.metadata.authentic_data);
    assert_eq!(types(&ad_only.answers), vec![RecordType::MX]);
    let neither = ask(dns.addr, &query("secure.test.", RecordType::MX, false, false, false)).await;
    assert!(!neither.metadata.authentic_data);
    // A secure denial is authentic too.
    let nodata = ask(dns.addr, &query("secure.test.", RecordType::TLSA, true, true, false)).await;
    assert!(nodata.metadata.authentic_data);
    let insecure = ask(dns.addr, &query("insecure.test.", RecordType::MX, true, true, false)).await;
    assert_eq!(insecure.metadata.response_code, ResponseCode::NoError);
    assert!(!insecure.metadata.authentic_data);
    assert_eq!(types(&insecure.answers), vec![RecordType::MX]);
    for name in ["bogus.test.", "expired.test.", "_25._tcp.mx.bogus.test."] {
        let rtype = if name.starts_with('_') { RecordType::TLSA } else { RecordType::MX };
        let failed = ask(dns.addr, &query(name, rtype, true, true, false)).await;
        assert_eq!(failed.metadata.response_code, ResponseCode::ServFail, "{name}");
        assert!(failed.answers.is_empty());
        let unchecked = ask(dns.addr, &query(name, rtype, true, true, true)).await;
        assert_eq!(unchecked.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(!unchecked.metadata.authentic_data);
        assert_eq!(types(&unchecked.answers), vec![rtype, RecordType::RRSIG], "{name}");
    }
    // The DS of a bogus zone is the parent's, and secure.
    let ds = ask(dns.addr, &query("bogus.test.", RecordType::DS, true, true, false)).await;
    assert!(ds.metadata.authentic_data);
    // A validating resolver behind it sees the same verdicts.
    let validating = resolver(&dns, Some(dns.trust_anchor()), false);
    let lookup = validating.lookup("secure.test.", RecordType::MX).await.unwrap();
    assert!(lookup.message().metadata.authentic_data);
    assert_eq!(proofs(&lookup, RecordType::MX), vec![Proof::Secure]);
    assert!(validating.lookup("bogus.test.", RecordType::MX).await.is_err());
}

#[tokio::test]
async fn an_unsigned_server_answers_as_it_always_did() {
    let dns = FakeDns::start(60).await;
    dns.add("a.example.test", Rr::Mx(10, "mx.example.test".into()));
    let answer = ask(dns.addr, &query("a.example.test.", RecordType::MX, true, true, false)).await;
    assert_eq!(types(&answer.answers), vec![RecordType::MX]);
    assert!(answer.edns.is_none());
    assert!(answer.metadata.authoritative);
    let missing = ask(dns.addr, &query("b.example.test.", RecordType::MX, true, false, false)).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(types(&missing.authorities), vec![RecordType::SOA]);
    assert_eq!(missing.authorities[0].name, Name::from_ascii("test.").unwrap());
    let keys = ask(dns.addr, &query(".", RecordType::DNSKEY, true, false, false)).await;
    assert_eq!(keys.metadata.response_code, ResponseCode::NXDomain);
    // Validating mode on an unsigned server: nothing is authentic, nothing fails.
    dns.set_mode(ServerMode::Validating);
    let answer = ask(dns.addr, &query("a.example.test.", RecordType::MX, true, true, false)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(!answer.metadata.authentic_data);
    // Behaviours hold over TCP as over UDP.
    dns.set_behaviour("a.example.test", Behaviour::Servfail);
    let failed = tcp(dns.addr, &query("a.example.test.", RecordType::MX, false, false, false)).await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn an_oversized_answer_is_truncated_or_sent_whole_over_udp() {
    let dns = FakeDns::start(60).await;
    for i in 0..500 {
        dns.add("big.test", Rr::Mx(10, format!("mx{i}.big.test")));
    }
    let both = resolver(&dns, None, false);
    let tcp_only = resolver(&dns, None, true);
    // Compliant (the default): TC over UDP, then the whole answer over TCP.
    let truncated =
        Message::from_vec(&udp(dns.addr, &query("big.test.", RecordType::MX, false, false, false)).await);
    let truncated = truncated.unwrap();
    assert!(truncated.metadata.truncation);
    assert!(truncated.answers.is_empty());
    let lookup = both.lookup("big.test.", RecordType::MX).await.unwrap();
    assert_eq!(lookup.answers().len(), 500);
    assert!(dns.tcp_queries() >= 1);
    // Broken: one datagram larger than the client's 1232 bytes, without TC.
    dns.set_udp_oversize(UdpOversize::SendWhole);
    let whole = udp(dns.addr, &query("big.test.", RecordType::MX, false, false, false)).await;
    assert!(whole.len() > 1232, "{}", whole.len());
    let whole = Message::from_vec(&whole).unwrap();
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 500);
    let tcp_before = dns.tcp_queries();
    // A new resolver: the first one keeps using the TCP connection it opened after TC.
    let lookup = resolver(&dns, None, false).lookup("big.test.", RecordType::MX).await;
    assert!(lookup.is_err(), "{:?}", lookup.map(|l| l.answers().len()));
    assert!(no_records(&lookup).is_none(), "{lookup:?}");
    assert_eq!(dns.tcp_queries(), tcp_before, "no retry over TCP");
    let lookup = tcp_only.lookup("big.test.", RecordType::MX).await.unwrap();
    assert_eq!(lookup.answers().len(), 500);
    assert_eq!(dns.tcp_queries(), tcp_before + 1);
    // Signed and sent whole over TCP too.
    let signed = FakeDns::start_signed(60).await;
    for i in 0..500 {
        signed.add("big.test", Rr::Mx(10, format!("mx{i}.big.test")));
    }
    let lookup =
        resolver(&signed, Some(signed.trust_anchor()), false).lookup("big.test.", RecordType::MX).await;
    let lookup = lookup.unwrap();
    assert_eq!(proofs(&lookup, RecordType::MX).len(), 500);
    assert!(proofs(&lookup, RecordType::MX).iter().all(|p| *p == Proof::Secure));
}

#[tokio::test]
async fn the_query_log_tells_which_lookups_were_made() {
    let dns = signed().await;
    let plain = resolver(&dns, None, false);
    plain.lookup("secure.test.", RecordType::MX).await.unwrap();
    plain.lookup("mx.secure.test.", RecordType::A).await.unwrap();
    assert_eq!(dns.queries_of(RecordType::TLSA), 0);
    assert_eq!(dns.queries_of(RecordType::MX), 1);
    assert_eq!(dns.queries_for("Secure.Test.", RecordType::MX), 1);
    assert_eq!(dns.queries_for("secure.test", RecordType::A), 0);
    let validating = resolver(&dns, Some(dns.trust_anchor()), false);
    validating.lookup("_25._tcp.mx.secure.test.", RecordType::TLSA).await.unwrap();
    assert_eq!(dns.queries_for("_25._tcp.mx.secure.test", RecordType::TLSA), 1);
    assert!(dns.queries_for(".", RecordType::DNSKEY) >= 1);
    assert!(dns.queries_for("secure.test", RecordType::DS) >= 1);
    let log = dns.query_log();
    let tlsa = log.iter().find(|q| q.rtype == RecordType::TLSA).unwrap();
    assert!(tlsa.dnssec_ok && tlsa.authentic_data && !tlsa.checking_disabled);
    assert_eq!(tlsa.transport, Transport::Udp);
    assert_eq!(dns.queries(), log.len() as u64);
}

#[tokio::test]
async fn an_mx_may_name_an_address() {
    for dns in [FakeDns::start(60).await, FakeDns::start_signed(60).await] {
        dns.add("literal.test", Rr::Mx(10, "192.0.2.1".into())).add("null.test", Rr::Mx(0, ".".into()));
        let lookup = resolver(&dns, None, false).lookup("literal.test.", RecordType::MX).await.unwrap();
        let RData::MX(mx) = &lookup.answers()[0].data else { panic!("{lookup:?}") };
        assert_eq!(mx.exchange.to_ascii(), "192.0.2.1.");
        let lookup = resolver(&dns, None, false).lookup("null.test.", RecordType::MX).await.unwrap();
        let RData::MX(mx) = &lookup.answers()[0].data else { panic!("{lookup:?}") };
        assert!(mx.exchange.is_root());
    }
}
