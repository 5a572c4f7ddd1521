//! What the exporter can learn of DNSSEC through its name servers, and the raw queries that
//! find out.
//!
//! Beside the data flow, under `dns`: the resolver asks [`check_server`] whether each of its
//! name servers gives DNSSEC answers (the root's DNSKEY, asked with the DO bit, comes back
//! signed; in `trust_ad` mode, with the AD bit of a validating resolver) before it calls an
//! answer bogus, because a forwarder that strips DNSSEC records (dnsmasq, a home router)
//! makes every signed or unsigned zone look bogus to a validator behind it. A verdict the
//! resolver cannot reach is `indeterminate` with the reason, never `bogus`. [`ask`] is the
//! raw query of both: DO and AD set, CD as asked, UDP then TCP.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::tcp::TcpClientStream;
use hickory_resolver::net::udp::UdpClientStream;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::NetError;
use hickory_resolver::proto::dnssec::rdata::DNSSECRData;
use hickory_resolver::proto::op::{DnsRequest, DnsRequestOptions, Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

/// How DNSSEC verdicts are reached: `dns.dnssec`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum DnssecMode {
    /// The exporter validates the chain itself, from the trust anchors: works behind any
    /// resolver that passes DNSSEC records, validating or not.
    #[default]
    Validate,
    /// The exporter trusts the AD bit of a validating resolver it asks (as Postfix's
    /// `smtp_dns_support_level = dnssec` does): only for a resolver on loopback or a
    /// trusted link, since anyone on the path could set the bit.
    TrustAd,
    /// No DNSSEC verdicts: no TLSA lookups, DANE and the domains' DNSSEC not checked.
    Off,
}

impl DnssecMode {
    /// The configuration's word for it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The mode named `text`, as `dns.dnssec` and `--dnssec` write it.
    pub fn parse(text: &str) -> Result<DnssecMode, String> {
        use strum::VariantArray as _;
        DnssecMode::VARIANTS
            .iter()
            .copied()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not one of validate, trust_ad, off"))
    }
}

/// What one name server showed of DNSSEC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCheck {
    pub server: SocketAddr,
    /// It gives what the mode needs: signatures (`validate`) or the AD bit (`trust_ad`).
    pub capable: bool,
    /// Why not, in words naming the server; empty when capable.
    pub detail: String,
}

/// What the resolver's name servers showed of DNSSEC when last asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub mode: DnssecMode,
    pub servers: Vec<ServerCheck>,
}

impl Capability {
    /// Whether a DNSSEC verdict from these servers can be trusted: every server gives what
    /// the mode needs (the resolver may ask any of them).
    pub fn capable(&self) -> bool {
        self.mode != DnssecMode::Off && !self.servers.is_empty() && self.servers.iter().all(|s| s.capable)
    }

    /// Why DNSSEC cannot be judged through these servers, in words, with what to do;
    /// `None` when it can.
    pub fn explain(&self) -> Option<String> {
        if self.capable() {
            return None;
        }
        if self.mode == DnssecMode::Off {
            return Some("dns.dnssec is off".to_owned());
        }
        if self.servers.is_empty() {
            return Some("the exporter has no name server to ask".to_owned());
        }
        let why: Vec<&str> = self.servers.iter().filter(|s| !s.capable).map(|s| s.detail.as_str()).collect();
        let fix = match self.mode {
            DnssecMode::TrustAd => "point dns.nameservers at a validating resolver on a trusted link, or use dns.dnssec: validate",
            _ => "point dns.nameservers at a resolver that passes DNSSEC records (unbound, BIND, a public one), or set dns.dnssec: trust_ad with a validating one, or off",
        };
        Some(format!("DNSSEC cannot be judged from here: {}; {fix}", why.join("; ")))
    }
}

/// How long one check of a server waits for its answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks `server` for the root's DNSKEY with the DO and AD bits, and says whether it gives
/// what `mode` needs: a signature over the keys (`validate`), or the AD bit (`trust_ad`).
pub async fn check_server(server: SocketAddr, mode: DnssecMode, timeout: Duration) -> ServerCheck {
    let verdict = |capable: bool, detail: String| ServerCheck { server, capable, detail };
    let response = match ask(server, &Name::root(), RecordType::DNSKEY, false, timeout).await {
        Ok(response) => response,
        Err(e) => {
            return verdict(
                false,
                format!(
                    "the name server {server} did not answer a DNSKEY query for the root ({})",
                    words(&e)
                ),
            )
        }
    };
    let code = response.metadata.response_code;
    if code != ResponseCode::NoError {
        return verdict(
            false,
            format!("the name server {server} answers {} for the root's DNSKEY", rcode(code)),
        );
    }
    match mode {
        DnssecMode::TrustAd if !response.metadata.authentic_data => verdict(
            false,
            format!(
                "the name server {server} does not set the AD bit on the root's keys: it does not validate"
            ),
        ),
        DnssecMode::Validate if !signed(&response, RecordType::DNSKEY) => verdict(
            false,
            format!("the name server {server} gives no DNSSEC signatures (a forwarder that strips them?)"),
        ),
        _ => verdict(true, String::new()),
    }
}

/// Whether `response` carries an RRSIG over its `covered` records.
fn signed(response: &Message, covered: RecordType) -> bool {
    response.answers.iter().any(
        |r| matches!(&r.data, RData::DNSSEC(DNSSECRData::RRSIG(sig)) if sig.input().type_covered == covered),
    )
}

/// A query of `name` and `record_type` to `server`, with DO and AD set (RFC 6840 §5.7)
/// and CD as asked (`checking_disabled`: a validating resolver then answers what it
/// would refuse as bogus). Over UDP with a 1232-byte payload; over TCP when the answer
/// is truncated or does not decode (a server that sends more than fits without TC). The
/// answer's code is the caller's to read: SERVFAIL and REFUSED come back as answers.
pub async fn ask(
    server: SocketAddr,
    name: &Name,
    record_type: RecordType,
    checking_disabled: bool,
    timeout: Duration,
) -> Result<Message, NetError> {
    let mut message = Message::query();
    message.add_query(Query::query(name.clone(), record_type));
    message.metadata.recursion_desired = true;
    message.metadata.authentic_data = true;
    message.metadata.checking_disabled = checking_disabled;
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_dnssec_ok(true);
    message.set_edns(edns);
    let udp = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(timeout))
        .exchange();
    let answer =
        udp.send(DnsRequest::new(message.clone(), DnsRequestOptions::default())).first_answer().await;
    match answer {
        Ok(response) if !response.metadata.truncation => Ok(response.into_message()),
        Ok(_) | Err(NetError::Proto(_)) => {
            let tcp = TcpClientStream::exchange(server, None, timeout, None, TokioRuntimeProvider::default())
                .await?;
            let response =
                tcp.send(DnsRequest::new(message, DnsRequestOptions::default())).first_answer().await?;
            Ok(response.into_message())
        }
        Err(e) => Err(e),
    }
}

/// A response code as `dig` writes it.
pub fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        other => format!("response code {}", u16::from(other)),
    }
}

/// A resolver error in words, without the library's struct dumps.
pub fn words(error: &NetError) -> String {
    match error {
        NetError::Timeout => "no answer".to_owned(),
        NetError::Io(e) => e.to_string(),
        _ => {
            let text = error.to_string();
            // Keep the first sentence: some errors go on with a Debug dump of the message.
            let first = text.split(['{', '\n']).next().unwrap_or("").trim_end_matches([' ', ':', ',']);
            crate::outcome::truncate(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(server: &str, capable: bool, detail: &str) -> ServerCheck {
        ServerCheck { server: server.parse().unwrap(), capable, detail: detail.to_owned() }
    }

    #[test]
    fn the_modes_are_read_by_their_names() {
        assert_eq!(DnssecMode::parse("validate"), Ok(DnssecMode::Validate));
        assert_eq!(DnssecMode::parse("trust_ad"), Ok(DnssecMode::TrustAd));
        assert_eq!(DnssecMode::parse("off"), Ok(DnssecMode::Off));
        assert_eq!(DnssecMode::parse("on"), Err("\"on\" is not one of validate, trust_ad, off".to_owned()));
        assert_eq!(DnssecMode::default(), DnssecMode::Validate);
    }

    /// One server without DNSSEC is enough to make every verdict doubtful; the words name
    /// it and say what to do, per mode.
    #[test]
    fn a_verdict_needs_every_server_capable() {
        let good = check("127.0.0.1:53", true, "");
        let bad = check("127.0.0.1:5354", false, "the name server 127.0.0.1:5354 gives no DNSSEC signatures");
        let of = |mode, servers: Vec<ServerCheck>| Capability { mode, servers };
        assert!(of(DnssecMode::Validate, vec![good.clone()]).capable());
        assert_eq!(of(DnssecMode::Validate, vec![good.clone()]).explain(), None);
        let mixed = of(DnssecMode::Validate, vec![good.clone(), bad.clone()]);
        assert!(!mixed.capable());
        let words = mixed.explain().unwrap();
        assert!(
            words.starts_with("DNSSEC cannot be judged from here: the name server 127.0.0.1:5354 gives"),
            "{words}"
        );
        assert!(words.contains("dns.dnssec: trust_ad"), "{words}");
        let ad = of(DnssecMode::TrustAd, vec![bad]).explain().unwrap();
        assert!(ad.contains("a validating resolver on a trusted link"), "{ad}");
        assert!(!of(DnssecMode::Validate, vec![]).capable());
        assert_eq!(
            of(DnssecMode::Validate, vec![]).explain().unwrap(),
            "the exporter has no name server to ask"
        );
        assert!(!of(DnssecMode::Off, vec![good]).capable());
    }
}
