//! The exporter's own resolver: hickory-resolver with our settings, timed and classified.
//!
//! Beside the data flow rather than in it: `config` builds one [`Resolver`] per loaded
//! configuration from its `dns:` section, the probe walk asks it for a host's address
//! (no getaddrinfo on the probe path), and the domain walk (`domains`) and `check DOMAIN`
//! ask it for MX sets and for every address of each MX. Each query is timed; a failure
//! comes back as one [`DnsFailure`] from a fixed set, with words for the logs; answers are
//! cached for their TTL, held between a floor and a cap.
//!
//! TLSA records (DANE) are asked of a second, validating resolver on the same name servers:
//! it checks the DNSSEC chain itself, from the root's keys (IANA's, compiled into hickory)
//! or from the keys in `dns.trust_anchors`, and says whether the answer is secure,
//! insecure (an unsigned zone: no DANE applies) or bogus.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

/// The most addresses of one family kept for one host: a name with more gets its first
/// ones (in the order the server gave) probed, and a warning logged. It bounds the series
/// a host can add.
pub const MAX_ADDRESSES_PER_FAMILY: usize = 8;

/// The most MX hosts of one domain that are walked, in preference order.
pub const MAX_MX_HOSTS: usize = 16;

/// The most TLSA records of one name that are kept (a key rollover publishes two or
/// three).
pub const MAX_TLSA_RECORDS: usize = 16;

/// How the resolver is set up: the `dns:` section of the configuration, or `check`'s
/// `--dns-server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Where to send queries; empty means the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// How many times a query is sent before giving up.
    pub attempts: usize,
    /// The shortest time an answer is kept, whatever its TTL says.
    pub min_ttl: Duration,
    /// The longest time an answer is kept, whatever its TTL says.
    pub max_ttl: Duration,
    /// Whether names in `/etc/hosts` answer before DNS (`localhost`, lab hosts).
    pub hosts_file: bool,
    /// How many answers the cache holds at most; 0 turns it off. A domain walk asks again
    /// only when a TTL runs out, so the cache mostly serves host targets probed more often
    /// than their records' TTL (see BENCHMARKS.md, section 4).
    pub cache_size: u64,
    /// The DNSKEY records the validating resolver trusts (a file of zone-file lines);
    /// `None` means IANA's root keys.
    pub trust_anchors: Option<std::path::PathBuf>,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
            hosts_file: true,
            cache_size: 8192,
            trust_anchors: None,
        }
    }
}

/// Why a lookup failed, from a fixed set: the `reason` label of the domain series, and
/// (with a `dns_` prefix) the probe's failure reason in its `resolve` phase.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum DnsFailure {
    /// The name does not exist (NXDOMAIN).
    Nxdomain,
    /// The server failed to answer (SERVFAIL): often a broken delegation or DNSSEC.
    Servfail,
    /// The server refused the query (REFUSED): not its zone, or not for this client.
    Refused,
    /// No answer came within the timeout, after every attempt.
    Timeout,
    /// The name exists but has no record of the type asked (NODATA).
    NoRecords,
    /// The answer was truncated and could not be had in full over TCP.
    Truncated,
    /// DNSSEC validation failed.
    Bogus,
    /// Anything else: a malformed answer, another response code, no name server to ask.
    Other,
}

impl DnsFailure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A failed lookup: its bounded reason, the words for logs, and how long it took.
#[derive(Clone, Debug)]
pub struct LookupError {
    pub failure: DnsFailure,
    pub detail: String,
    pub elapsed: Duration,
    /// How long the server said the absence holds (a negative answer's SOA minimum);
    /// zero when it did not say.
    pub ttl: Duration,
}

/// A successful lookup: what it found, how long it took, and how long it stays valid.
#[derive(Clone, Debug)]
pub struct Answer<T> {
    pub value: T,
    pub elapsed: Duration,
    pub ttl: Duration,
}

/// One MX record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mx {
    pub preference: u16,
    /// The exchange's name, lower case, without the final dot.
    pub host: String,
}

/// What a domain's MX lookup says about where its mail goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxSet {
    /// MX records, sorted by preference then name (at most [`MAX_MX_HOSTS`]).
    Hosts(Vec<Mx>),
    /// No MX record: the domain's own addresses are its implicit MX (RFC 5321 §5.1).
    Implicit,
    /// A null MX (`0 .`, RFC 7505): the domain accepts no mail.
    Null,
}

/// What DNSSEC says of an answer that has records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dnssec {
    /// Signed, with a chain of trust up to an anchor: DANE applies.
    Secure,
    /// Provably unsigned (no DS on the way down): DANE does not apply.
    Insecure,
    /// The validator could not decide (no anchor above the name).
    Indeterminate,
}

/// The TLSA records of one name and their DNSSEC status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsaSet {
    pub dnssec: Dnssec,
    /// Sorted, without duplicates (at most [`MAX_TLSA_RECORDS`]).
    pub records: Vec<crate::dane::Tlsa>,
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ip4,
    Ip6,
}

impl Family {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip4 => "ip4",
            Family::Ip6 => "ip6",
        }
    }

    pub fn of(address: IpAddr) -> Family {
        if address.is_ipv4() {
            Family::Ip4
        } else {
            Family::Ip6
        }
    }

    fn record_type(self) -> RecordType {
        match self {
            Family::Ip4 => RecordType::A,
            Family::Ip6 => RecordType::AAAA,
        }
    }
}

/// The resolver of one loaded configuration. Cheap to share (`Arc`); its cache lives as
/// long as it does.
pub struct Resolver {
    inner: TokioResolver,
    /// Validates DNSSEC: asked for TLSA records only.
    validating: TokioResolver,
    /// Why there is no name server to ask (an unreadable resolv.conf), said by every lookup.
    unusable: Option<String>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("unusable", &self.unusable).finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver with `settings`. The system's name servers are read from resolv.conf
    /// now; when that fails, the resolver still answers IP literals and `/etc/hosts`, and
    /// every DNS lookup fails with the reason, so that a host without resolv.conf can
    /// still probe addresses.
    ///
    /// A resolver with the same settings as one still in use is shared, so that a reload
    /// that keeps the `dns:` section keeps the cache.
    ///
    /// Fails only when `settings.trust_anchors` cannot be read or holds no DNSKEY; the
    /// error names the file.
    pub fn new(settings: &DnsSettings) -> Result<Arc<Resolver>, String> {
        static LAST: std::sync::Mutex<Option<(DnsSettings, std::sync::Weak<Resolver>)>> =
            std::sync::Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(resolver) = last.as_ref().filter(|(s, _)| s == settings).and_then(|(_, r)| r.upgrade()) {
            return Ok(resolver);
        }
        let resolver = Resolver::build(settings)?;
        *last = Some((settings.clone(), Arc::downgrade(&resolver)));
        Ok(resolver)
    }

    fn build(settings: &DnsSettings) -> Result<Arc<Resolver>, String> {
        let anchors = match &settings.trust_anchors {
            None => TrustAnchors::default(),
            Some(path) => read_trust_anchors(path)?,
        };
        let (config, unusable) = if settings.nameservers.is_empty() {
            match hickory_resolver::system_conf::read_system_conf() {
                Ok((config, _)) if !config.name_servers().is_empty() => (config, None),
                Ok(_) => (
                    ResolverConfig::from_parts(None, vec![], vec![]),
                    Some(
                        "the system's resolver configuration lists no name server; set dns.nameservers"
                            .to_owned(),
                    ),
                ),
                Err(e) => (
                    ResolverConfig::from_parts(None, vec![], vec![]),
                    Some(format!(
                        "the system's resolver configuration cannot be read ({e}); set dns.nameservers"
                    )),
                ),
            }
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            (ResolverConfig::from_parts(None, vec![], servers), None)
        };
        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout;
        options.attempts = settings.attempts;
        options.positive_min_ttl = Some(settings.min_ttl);
        options.negative_min_ttl = Some(settings.min_ttl);
        options.positive_max_ttl = Some(settings.max_ttl);
        options.negative_max_ttl = Some(settings.max_ttl);
        options.use_hosts_file = if settings.hosts_file { ResolveHosts::Always } else { ResolveHosts::Never };
        options.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        options.cache_size = settings.cache_size;
        options.try_tcp_on_error = true;
        // A fleet of domains resolves hundreds of names at once, each within its own probe
        // deadline: queue them rather than fail them.
        options.max_active_requests = 256;
        let mut builder = TokioResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default());
        *builder.options_mut() = options.clone();
        let inner = builder.build().map_err(|e| format!("cannot build the resolver: {e}"))?;
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_trust_anchor(Arc::new(anchors));
        *builder.options_mut() = options;
        builder.options_mut().validate = true;
        let validating = builder.build().map_err(|e| format!("cannot build the validating resolver: {e}"))?;
        Ok(Arc::new(Resolver { inner, validating, unusable }))
    }

    /// The MX set of `domain`.
    pub async fn mx(&self, domain: &str) -> Result<Answer<MxSet>, LookupError> {
        let started = Instant::now();
        match self.query(domain, RecordType::MX).await {
            Ok((records, ttl)) => {
                let mut hosts: Vec<Mx> = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RData::MX(mx) => Some(Mx {
                            preference: mx.preference,
                            host: mx.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                        }),
                        _ => None,
                    })
                    .collect();
                hosts.sort();
                hosts.dedup();
                // RFC 7505: a single MX with an empty exchange ("." ) at preference 0.
                let value = if hosts.len() == 1 && hosts[0].host.is_empty() {
                    MxSet::Null
                } else if hosts.is_empty() {
                    MxSet::Implicit
                } else {
                    hosts.retain(|mx| !mx.host.is_empty());
                    hosts.truncate(MAX_MX_HOSTS);
                    MxSet::Hosts(hosts)
                };
                Ok(Answer { value, elapsed: started.elapsed(), ttl })
            }
            Err(e) if e.failure == DnsFailure::NoRecords => {
                Ok(Answer { value: MxSet::Implicit, elapsed: started.elapsed(), ttl: e.ttl })
            }
            Err(mut e) => {
                e.elapsed = started.elapsed();
                Err(e)
            }
        }
    }

    /// Every address of `host` in `family` (at most [`MAX_ADDRESSES_PER_FAMILY`]), in the
    /// order the answer gave them; an IP literal is its own answer. No address of that
    /// family is `no_records`.
    pub async fn addresses(&self, host: &str, family: Family) -> Result<Answer<Vec<IpAddr>>, LookupError> {
        let started = Instant::now();
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            let value = if Family::of(ip) == family { vec![ip] } else { vec![] };
            if value.is_empty() {
                return Err(LookupError {
                    failure: DnsFailure::NoRecords,
                    detail: format!("{host} is an address of the other family"),
                    elapsed: started.elapsed(),
                    ttl: Duration::MAX,
                });
            }
            return Ok(Answer { value, elapsed: started.elapsed(), ttl: Duration::MAX });
        }
        let (records, ttl) = self.query(host, family.record_type()).await.map_err(|mut e| {
            e.elapsed = started.elapsed();
            e
        })?;
        let mut value: Vec<IpAddr> = Vec::new();
        for record in records {
            let ip = match record {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            if !value.contains(&ip) {
                value.push(ip);
            }
        }
        if value.is_empty() {
            return Err(LookupError {
                failure: DnsFailure::NoRecords,
                detail: format!("{host} has no {} address", family.record_type()),
                elapsed: started.elapsed(),
                ttl,
            });
        }
        if value.len() > MAX_ADDRESSES_PER_FAMILY {
            tracing::warn!(
                host,
                addresses = value.len(),
                kept = MAX_ADDRESSES_PER_FAMILY,
                "a host has more addresses of one family than are probed; the first ones are kept"
            );
            value.truncate(MAX_ADDRESSES_PER_FAMILY);
        }
        Ok(Answer { value, elapsed: started.elapsed(), ttl })
    }

    /// The TXT records of `name`, each with its strings joined (as RFC 8461 and 8460 read
    /// them). No record is `no_records`.
    pub async fn txt(&self, name: &str) -> Result<Answer<Vec<String>>, LookupError> {
        let started = Instant::now();
        let (records, ttl) = self.query(name, RecordType::TXT).await.map_err(|mut e| {
            e.elapsed = started.elapsed();
            e
        })?;
        let value = records
            .into_iter()
            .filter_map(|r| match r {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        Ok(Answer { value, elapsed: started.elapsed(), ttl })
    }

    /// The TLSA records of `name` (`_25._tcp.mx.example.com`), with their DNSSEC status.
    /// A bogus answer is the failure `bogus`; no record is `no_records` (DANE does not
    /// apply, whether the zone is signed or not).
    pub async fn tlsa(&self, name: &str) -> Result<Answer<TlsaSet>, LookupError> {
        let started = Instant::now();
        let fail = |failure, detail: String| LookupError {
            failure,
            detail,
            elapsed: started.elapsed(),
            ttl: Duration::ZERO,
        };
        if let Some(why) = &self.unusable {
            return Err(fail(DnsFailure::Other, format!("{name}: {why}")));
        }
        let lookup = match self.validating.lookup(fully_qualified(name).as_str(), RecordType::TLSA).await {
            Ok(lookup) => lookup,
            Err(e) => {
                let (failure, words) = classify(&e);
                return Err(LookupError {
                    ttl: negative_ttl(&e),
                    ..fail(failure, format!("TLSA {name}: {words}"))
                });
            }
        };
        let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
        let mut proofs = Vec::new();
        let mut records = Vec::new();
        for record in lookup.answers().iter().filter(|r| r.record_type() == RecordType::TLSA) {
            proofs.push(record.proof);
            if let RData::TLSA(tlsa) = &record.data {
                records.push(crate::dane::Tlsa {
                    usage: tlsa.cert_usage.into(),
                    selector: tlsa.selector.into(),
                    matching: tlsa.matching.into(),
                    data: tlsa.cert_data.clone(),
                });
            }
        }
        if records.is_empty() {
            return Err(fail(DnsFailure::NoRecords, format!("TLSA {name}: no record of this type (NODATA)")));
        }
        // The weakest proof among the records stands for the set.
        let dnssec = if proofs.iter().any(|p| p.is_bogus()) {
            return Err(fail(DnsFailure::Bogus, format!("TLSA {name}: DNSSEC validation failed")));
        } else if proofs.iter().all(|p| p.is_secure()) {
            Dnssec::Secure
        } else if proofs.iter().all(|p| p.is_secure() || p.is_insecure()) {
            Dnssec::Insecure
        } else {
            Dnssec::Indeterminate
        };
        records.sort();
        records.dedup();
        records.truncate(MAX_TLSA_RECORDS);
        Ok(Answer { value: TlsaSet { dnssec, records }, elapsed: started.elapsed(), ttl })
    }

    /// The first address of `host` for a probe: IPv4 first, else IPv6 (`auto`), or only
    /// the family asked.
    pub async fn first_address(&self, host: &str, family: Option<Family>) -> Result<IpAddr, LookupError> {
        let families: &[Family] = match family {
            None => &[Family::Ip4, Family::Ip6],
            Some(Family::Ip4) => &[Family::Ip4],
            Some(Family::Ip6) => &[Family::Ip6],
        };
        let mut last = None;
        for &family in families {
            match self.addresses(host, family).await {
                Ok(answer) => return Ok(answer.value[0]),
                // No address of this family: try the next; any other failure is final.
                Err(e) if e.failure == DnsFailure::NoRecords => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        let mut error = last.expect("at least one family is tried");
        if families.len() == 2 {
            error.detail = format!("{host} has neither an A nor an AAAA record");
        }
        Err(error)
    }

    /// One query: the records of `record_type` in the answer (CNAMEs followed) and how long
    /// they stay valid.
    async fn query(
        &self,
        name: &str,
        record_type: RecordType,
    ) -> Result<(Vec<RData>, Duration), LookupError> {
        let fail = |failure, detail: String| LookupError {
            failure,
            detail,
            elapsed: Duration::ZERO,
            ttl: Duration::ZERO,
        };
        let fqdn = fully_qualified(name);
        // The hosts file answers before DNS, even without a name server.
        if self.unusable.is_some() && !matches!(record_type, RecordType::A | RecordType::AAAA) {
            return Err(fail(
                DnsFailure::Other,
                format!("{name}: {}", self.unusable.as_deref().unwrap_or("")),
            ));
        }
        match self.inner.lookup(fqdn.as_str(), record_type).await {
            Ok(lookup) => {
                let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
                let records = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .map(|r| r.data.clone())
                    .collect();
                Ok((records, ttl))
            }
            Err(e) => {
                let (failure, words) = classify(&e);
                let detail = match (&self.unusable, failure) {
                    (Some(why), DnsFailure::Other) => format!("{record_type} {name}: {why}"),
                    _ => format!("{record_type} {name}: {words}"),
                };
                Err(LookupError { ttl: negative_ttl(&e), ..fail(failure, detail) })
            }
        }
    }
}

/// How long a negative answer holds, from its SOA; zero for any other error.
fn negative_ttl(error: &NetError) -> Duration {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none)) => {
            Duration::from_secs(none.negative_ttl.map_or(0, u64::from))
        }
        _ => Duration::ZERO,
    }
}

/// Reads a trust-anchor file: DNSKEY records in zone-file syntax, one per line
/// (`. 3600 IN DNSKEY 257 3 13 …`, as `dig DNSKEY .` prints them).
fn read_trust_anchors(path: &std::path::Path) -> Result<TrustAnchors, String> {
    let text = crate::config::read_bounded(path, 1 << 20).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    let anchors = TrustAnchors::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if anchors.is_empty() {
        return Err(format!("{}: no DNSKEY record found", path.display()));
    }
    Ok(anchors)
}

/// `name` with a final dot when it has a dot inside: such a name is not looked up under
/// the search domains. A single label (`mail`, `localhost`) keeps resolv.conf's search
/// list, as getaddrinfo would.
fn fully_qualified(name: &str) -> String {
    let name = name.trim_end_matches('.');
    if name.contains('.') {
        format!("{name}.")
    } else {
        name.to_owned()
    }
}

/// The bounded reason of a resolver error, and words for it.
fn classify(error: &NetError) -> (DnsFailure, String) {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none)) if none.response_code == ResponseCode::NXDomain => {
            (DnsFailure::Nxdomain, "the name does not exist (NXDOMAIN)".into())
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => {
            (DnsFailure::NoRecords, "no record of this type (NODATA)".into())
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            (DnsFailure::Servfail, "the name server failed (SERVFAIL)".into())
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            (DnsFailure::Refused, "the name server refused the query (REFUSED)".into())
        }
        NetError::Dns(DnsError::ResponseCode(code)) => (DnsFailure::Other, format!("response code {code}")),
        NetError::Dns(DnsError::DnssecBogus) => (DnsFailure::Bogus, "DNSSEC validation failed".into()),
        NetError::Timeout => (DnsFailure::Timeout, "no answer from the name server".into()),
        other => {
            let words = other.to_string();
            let failure = if words.contains("truncat") {
                DnsFailure::Truncated
            } else if words.contains("timed out") || words.contains("no connections available") {
                DnsFailure::Timeout
            } else {
                DnsFailure::Other
            };
            (failure, words)
        }
    }
}
