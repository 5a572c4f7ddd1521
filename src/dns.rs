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

pub use crate::dnssec::{Capability, DnssecMode};
use crate::outcome::Reason;

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
    /// How DNSSEC verdicts are reached (`dns.dnssec`).
    pub dnssec: DnssecMode,
    /// The kinds of address a name may resolve to that are never probed
    /// (`dns.refuse_addresses`): whoever controls a watched domain's DNS must not make the
    /// exporter connect to the cloud metadata service or its own host.
    pub refuse_addresses: Vec<AddressClass>,
}

/// A kind of address, for `dns.refuse_addresses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7.
    Private,
    /// 169.254/16 (cloud metadata services live there), fe80::/10.
    LinkLocal,
    /// 0.0.0.0 and :: (which reach this host itself).
    Unspecified,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The classes refused unless the configuration says otherwise.
    pub const REFUSED_BY_DEFAULT: [AddressClass; 4] = [
        AddressClass::LinkLocal,
        AddressClass::Unspecified,
        AddressClass::Multicast,
        AddressClass::Broadcast,
    ];

    /// The class named `text`, as the configuration writes it.
    pub fn parse(text: &str) -> Result<AddressClass, String> {
        use strum::VariantArray as _;
        AddressClass::VARIANTS.iter().copied().find(|c| c.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = AddressClass::VARIANTS.iter().map(|c| c.as_str()).collect();
            format!("{text:?} is not one of {}", names.join(", "))
        })
    }

    /// Whether `address` is of this class (an IPv4-mapped IPv6 address as its IPv4).
    pub fn holds(self, address: IpAddr) -> bool {
        match (self, address.to_canonical()) {
            (AddressClass::Loopback, ip) => ip.is_loopback(),
            (AddressClass::Private, IpAddr::V4(v4)) => v4.is_private(),
            (AddressClass::Private, IpAddr::V6(v6)) => (v6.segments()[0] & 0xfe00) == 0xfc00,
            (AddressClass::LinkLocal, IpAddr::V4(v4)) => v4.is_link_local(),
            (AddressClass::LinkLocal, IpAddr::V6(v6)) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            (AddressClass::Unspecified, ip) => ip.is_unspecified(),
            (AddressClass::Multicast, ip) => ip.is_multicast(),
            (AddressClass::Broadcast, IpAddr::V4(v4)) => v4.is_broadcast(),
            (AddressClass::Broadcast, IpAddr::V6(_)) => false,
        }
    }
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
            dnssec: DnssecMode::Validate,
            refuse_addresses: AddressClass::REFUSED_BY_DEFAULT.to_vec(),
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
    /// An MX record names an address, not a host (`MX 10 192.0.2.1.`): senders skip it
    /// (Postfix) or refuse it (Exim, unless `allow_mx_to_ip`).
    MxIpLiteral,
    /// The name resolves only to addresses `dns.refuse_addresses` refuses (link-local,
    /// unspecified, multicast, broadcast by default): nothing is connected to.
    AddressRefused,
    /// Anything else: a malformed answer, another response code, no name server to ask.
    Other,
}

impl DnsFailure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The reason a probe fails with when its name lookup failed so.
    pub fn reason(self) -> Reason {
        match self {
            DnsFailure::Nxdomain => Reason::DnsNxdomain,
            DnsFailure::NoRecords => Reason::DnsNoRecords,
            DnsFailure::Servfail => Reason::DnsServfail,
            DnsFailure::Refused => Reason::DnsRefused,
            DnsFailure::Timeout => Reason::DnsTimeout,
            DnsFailure::Truncated => Reason::DnsTruncated,
            DnsFailure::Bogus => Reason::DnsBogus,
            DnsFailure::AddressRefused => Reason::DnsAddressRefused,
            // Only a domain walk meets an MX that names an address; a probe never does.
            DnsFailure::MxIpLiteral | DnsFailure::Other => Reason::Dns,
        }
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
    /// The validator could not decide (no anchor above the name), or the exporter's own
    /// name servers cannot give what a verdict needs (see `TlsaSet::why`).
    Indeterminate,
}

/// The TLSA records of one name and their DNSSEC status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsaSet {
    pub dnssec: Dnssec,
    /// Sorted, without duplicates (at most [`MAX_TLSA_RECORDS`]).
    pub records: Vec<crate::dane::Tlsa>,
    /// Why the status is indeterminate, in words (the resolver's own state, with a fix).
    pub why: Option<String>,
}

/// What DNSSEC says of a domain's own records (its MX, or its addresses with an implicit
/// MX), from a fixed set: the `status` label of `smtp_domain_dnssec_status_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum DnssecStatus {
    /// Signed, with a chain of trust from the root.
    Secure,
    /// Provably unsigned.
    Insecure,
    /// The chain does not validate: validating resolvers answer SERVFAIL, so their
    /// senders cannot find where the domain's mail goes.
    Bogus,
    /// No verdict: the exporter's name servers cannot give one, or the lookup failed.
    Indeterminate,
    /// `dns.dnssec: off`.
    NotChecked,
}

impl DnssecStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A DNSSEC status and the words for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnssecVerdict {
    pub status: DnssecStatus,
    pub detail: String,
}

impl DnssecVerdict {
    fn new(status: DnssecStatus, detail: impl Into<String>) -> DnssecVerdict {
        DnssecVerdict { status, detail: detail.into() }
    }
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
    /// Validates DNSSEC: asked for TLSA records and for a domain's DNSSEC status.
    validating: TokioResolver,
    /// The same name servers over TCP only: asked again when a UDP answer did not fit and
    /// did not say so (no TC bit), which hickory does not retry over TCP by itself.
    tcp: TokioResolver,
    /// The name servers, for the raw queries of `dnssec` (capability, AD, CD).
    servers: Vec<SocketAddr>,
    mode: DnssecMode,
    /// The kinds of address never returned for a name.
    refuse: Vec<AddressClass>,
    /// What the name servers last showed of DNSSEC, and when.
    capability: tokio::sync::Mutex<Option<(Instant, Arc<Capability>)>>,
    /// How long one query may take (the raw ones too).
    timeout: Duration,
    /// Why there is no name server to ask (an unreadable resolv.conf), said by every lookup.
    unusable: Option<String>,
}

/// How long a DNSSEC capability check is trusted before the next lookup that needs it
/// asks again.
const CAPABILITY_TTL: Duration = Duration::from_secs(300);

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
    pub fn new(settings: &DnsSettings) -> Result<Arc<Resolver>, SetupError> {
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

    fn build(settings: &DnsSettings) -> Result<Arc<Resolver>, SetupError> {
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
        let servers: Vec<SocketAddr> = config
            .name_servers()
            .iter()
            .map(|server| {
                let port = server.connections.first().map_or(53, |c| c.port);
                SocketAddr::new(server.ip, port)
            })
            .collect();
        let tcp_config = ResolverConfig::from_parts(
            None,
            vec![],
            servers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect::<Vec<_>>(),
        );
        let build = |config: ResolverConfig, what: &'static str| {
            let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
            *builder.options_mut() = options.clone();
            builder.build().map_err(|e| SetupError::Build { what, words: e.to_string() })
        };
        let inner = build(config.clone(), "resolver")?;
        let tcp = build(tcp_config, "TCP resolver")?;
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_trust_anchor(Arc::new(anchors));
        *builder.options_mut() = options;
        builder.options_mut().validate = true;
        let validating = builder
            .build()
            .map_err(|e| SetupError::Build { what: "validating resolver", words: e.to_string() })?;
        Ok(Arc::new(Resolver {
            inner,
            validating,
            tcp,
            servers,
            mode: settings.dnssec,
            refuse: settings.refuse_addresses.clone(),
            capability: tokio::sync::Mutex::new(None),
            timeout: settings.timeout,
            unusable,
        }))
    }

    /// How DNSSEC verdicts are reached.
    pub fn dnssec_mode(&self) -> DnssecMode {
        self.mode
    }

    /// What the name servers show of DNSSEC: asked again when the last check is older
    /// than [`CAPABILITY_TTL`], or with `fresh` (a reload, a bogus verdict about to be
    /// given) unless a check ended since the call. One check runs at a time; those who
    /// wait take its result. A change is logged once, in words.
    pub async fn dnssec_capability(&self, fresh: bool) -> Arc<Capability> {
        let asked = Instant::now();
        let mut held = self.capability.lock().await;
        let current = |at: &Instant| if fresh { *at >= asked } else { at.elapsed() < CAPABILITY_TTL };
        if let Some((_, capability)) = held.as_ref().filter(|(at, _)| current(at)) {
            return capability.clone();
        }
        let mut servers = Vec::new();
        if self.mode != DnssecMode::Off {
            for &server in &self.servers {
                servers.push(crate::dnssec::check_server(server, self.mode, self.timeout).await);
            }
        }
        let capability = Arc::new(Capability { mode: self.mode, servers });
        let previous = held.replace((Instant::now(), capability.clone())).map(|(_, c)| c);
        if previous.as_deref() != Some(&capability) && self.mode != DnssecMode::Off {
            match capability.explain() {
                Some(why) => tracing::warn!(mode = self.mode.as_str(), "{why}"),
                None => tracing::info!(
                    mode = self.mode.as_str(),
                    "the name servers give DNSSEC answers: DANE and the domains' DNSSEC are judged"
                ),
            }
        }
        capability
    }

    /// The DNSSEC status of `name`'s records of `record_type` (a domain's MX, or its
    /// addresses with an implicit MX), as a validating sender's resolver would find it.
    pub async fn dnssec_of(&self, name: &str, record_type: RecordType) -> DnssecVerdict {
        let what = format!("{record_type} {name}");
        if self.mode == DnssecMode::Off {
            return DnssecVerdict::new(DnssecStatus::NotChecked, "dns.dnssec is off");
        }
        let capability = self.dnssec_capability(false).await;
        if let Some(why) = capability.explain() {
            return DnssecVerdict::new(DnssecStatus::Indeterminate, why);
        }
        let proven = match self.mode {
            DnssecMode::TrustAd => self.trusting_ad(name, record_type).await,
            _ => self.validated(name, record_type).await,
        };
        match proven {
            Ok(DnssecStatus::Bogus) => self.confirm_bogus(&what).await,
            Ok(status) => DnssecVerdict::new(status, format!("{what}: {}", status.as_str())),
            Err(words) => DnssecVerdict::new(DnssecStatus::Indeterminate, format!("{what}: {words}")),
        }
    }

    /// A bogus verdict, once the name servers are asked again and still give DNSSEC
    /// answers (a validator that could not fetch the keys says bogus too).
    async fn confirm_bogus(&self, what: &str) -> DnssecVerdict {
        match self.dnssec_capability(true).await.explain() {
            Some(why) => DnssecVerdict::new(DnssecStatus::Indeterminate, why),
            None => DnssecVerdict::new(
                DnssecStatus::Bogus,
                format!("{what}: DNSSEC validation fails; validating resolvers answer SERVFAIL"),
            ),
        }
    }

    /// The status the validating resolver finds: the weakest proof among the records.
    async fn validated(&self, name: &str, record_type: RecordType) -> Result<DnssecStatus, String> {
        match self.validating.lookup(fully_qualified(name).as_str(), record_type).await {
            Ok(lookup) => {
                let proofs: Vec<_> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .map(|r| r.proof)
                    .collect();
                Ok(weakest(&proofs))
            }
            Err(e) => match classify(&e) {
                (DnsFailure::Bogus, _) => Ok(DnssecStatus::Bogus),
                (DnsFailure::Servfail, _) if self.refused_as_bogus(name, record_type).await => {
                    Ok(DnssecStatus::Bogus)
                }
                (_, words) => Err(words),
            },
        }
    }

    /// The status a validating resolver says by its AD bit: set is secure, clear is
    /// insecure; a SERVFAIL that the same question with checking disabled does not get is
    /// bogus.
    async fn trusting_ad(&self, name: &str, record_type: RecordType) -> Result<DnssecStatus, String> {
        let fqdn = hickory_resolver::proto::rr::Name::from_str(&fully_qualified(name))
            .map_err(|e| format!("not a domain name: {e}"))?;
        let server = *self.servers.first().ok_or("no name server")?;
        let ask = |cd| crate::dnssec::ask(server, &fqdn, record_type, cd, self.timeout);
        let answer = ask(false).await.map_err(|e| crate::dnssec::words(&e))?;
        match answer.metadata.response_code {
            ResponseCode::NoError if answer.metadata.authentic_data => Ok(DnssecStatus::Secure),
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(DnssecStatus::Insecure),
            ResponseCode::ServFail => {
                let unchecked = ask(true).await.map_err(|e| crate::dnssec::words(&e))?;
                match unchecked.metadata.response_code {
                    ResponseCode::NoError | ResponseCode::NXDomain => Ok(DnssecStatus::Bogus),
                    code => Err(format!(
                        "the name server answers {}, with checking disabled too",
                        crate::dnssec::rcode(code)
                    )),
                }
            }
            code => Err(format!("the name server answers {}", crate::dnssec::rcode(code))),
        }
    }

    /// Whether `name`'s records of `record_type`, refused with SERVFAIL, come when asked
    /// with checking disabled: a validating name server finding them bogus.
    async fn refused_as_bogus(&self, name: &str, record_type: RecordType) -> bool {
        let (Some(&server), Ok(fqdn)) =
            (self.servers.first(), hickory_resolver::proto::rr::Name::from_str(&fully_qualified(name)))
        else {
            return false;
        };
        let answer = crate::dnssec::ask(server, &fqdn, record_type, true, self.timeout).await;
        answer
            .is_ok_and(|a| matches!(a.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain))
    }

    /// The MX set of `domain` asked with checking disabled (CD): what a validating name
    /// server that refused it as bogus (SERVFAIL) holds, so that the MX hosts of a bogus
    /// domain are still probed. `None` when it fails that way too.
    pub async fn mx_unchecked(&self, domain: &str) -> Option<Answer<MxSet>> {
        let started = Instant::now();
        let fqdn = hickory_resolver::proto::rr::Name::from_str(&fully_qualified(domain)).ok()?;
        let server = *self.servers.first()?;
        let answer = crate::dnssec::ask(server, &fqdn, RecordType::MX, true, self.timeout).await.ok()?;
        if answer.metadata.response_code != ResponseCode::NoError {
            return None;
        }
        let ttl = answer.answers.iter().map(|r| Duration::from_secs(u64::from(r.ttl))).min()?;
        let records = answer.answers.iter().map(|r| r.data.clone()).collect();
        Some(Answer { value: mx_set(records), elapsed: started.elapsed(), ttl })
    }

    /// The MX set of `domain`.
    pub async fn mx(&self, domain: &str) -> Result<Answer<MxSet>, LookupError> {
        let started = Instant::now();
        match self.query(domain, RecordType::MX).await {
            Ok((records, ttl)) => Ok(Answer { value: mx_set(records), elapsed: started.elapsed(), ttl }),
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
        let value = distinct_addresses(records.iter());
        if value.is_empty() {
            return Err(LookupError {
                failure: DnsFailure::NoRecords,
                detail: format!("{host} has no {} address", family.record_type()),
                elapsed: started.elapsed(),
                ttl,
            });
        }
        let mut value = self.allowed(host, value, started, ttl)?;
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

    /// `value` without the addresses a name must not lead the exporter to; when none is
    /// left, the lookup fails as refused (nothing is connected to).
    fn allowed(
        &self,
        host: &str,
        mut value: Vec<IpAddr>,
        started: Instant,
        ttl: Duration,
    ) -> Result<Vec<IpAddr>, LookupError> {
        let refused: Vec<(IpAddr, AddressClass)> = value
            .iter()
            .filter_map(|&ip| self.refuse.iter().find(|c| c.holds(ip)).map(|&c| (ip, c)))
            .collect();
        if refused.is_empty() {
            return Ok(value);
        }
        value.retain(|ip| !refused.iter().any(|(r, _)| r == ip));
        if !value.is_empty() {
            return Ok(value);
        }
        let listed: Vec<String> = refused.iter().map(|(ip, c)| format!("{ip} ({})", c.as_str())).collect();
        Err(LookupError {
            failure: DnsFailure::AddressRefused,
            detail: format!(
                "{host} resolves only to {}, which dns.refuse_addresses refuses: not probed",
                listed.join(", ")
            ),
            elapsed: started.elapsed(),
            ttl,
        })
    }

    /// Every address of `host` in `family` asked with checking disabled (CD): what a
    /// validating name server holds for a host of a bogus domain, which it refuses with
    /// SERVFAIL. A failure is SERVFAIL, as the checked lookup was.
    pub async fn addresses_unchecked(
        &self,
        host: &str,
        family: Family,
    ) -> Result<Answer<Vec<IpAddr>>, LookupError> {
        let started = Instant::now();
        let servfail = |detail: String| LookupError {
            failure: DnsFailure::Servfail,
            detail,
            elapsed: started.elapsed(),
            ttl: Duration::ZERO,
        };
        let what = format!("{} {host}", family.record_type());
        let fqdn = hickory_resolver::proto::rr::Name::from_str(&fully_qualified(host))
            .map_err(|e| servfail(format!("{what}: not a domain name: {e}")))?;
        let server = *self.servers.first().ok_or_else(|| servfail(format!("{what}: no name server")))?;
        let answer = crate::dnssec::ask(server, &fqdn, family.record_type(), true, self.timeout)
            .await
            .map_err(|e| servfail(format!("{what}: {}", crate::dnssec::words(&e))))?;
        let value = distinct_addresses(answer.answers.iter().map(|r| &r.data));
        if value.is_empty() {
            return Err(servfail(format!(
                "{what}: the name server answers SERVFAIL, and {} with checking disabled",
                crate::dnssec::rcode(answer.metadata.response_code)
            )));
        }
        let ttl =
            answer.answers.iter().map(|r| Duration::from_secs(u64::from(r.ttl))).min().unwrap_or_default();
        let mut value = self.allowed(host, value, started, ttl)?;
        value.truncate(MAX_ADDRESSES_PER_FAMILY);
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
    /// A bogus answer is the failure `bogus`, given only when the name servers give DNSSEC
    /// answers; behind ones that do not, records are `indeterminate` with the reason. No
    /// record is `no_records` (DANE does not apply, whether the zone is signed or not).
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
        let capability = self.dnssec_capability(false).await;
        if let Some(why) = capability.explain() {
            // The records as they are, unproven: what a verdict would be about.
            let (records, ttl) = self.query(name, RecordType::TLSA).await.map_err(|mut e| {
                e.elapsed = started.elapsed();
                e
            })?;
            let records = tlsa_records(records.iter());
            if records.is_empty() {
                return Err(fail(
                    DnsFailure::NoRecords,
                    format!("TLSA {name}: no record of this type (NODATA)"),
                ));
            }
            let value = TlsaSet { dnssec: Dnssec::Indeterminate, records, why: Some(why) };
            return Ok(Answer { value, elapsed: started.elapsed(), ttl });
        }
        if self.mode == DnssecMode::TrustAd {
            return self.tlsa_trusting_ad(name, started).await;
        }
        let lookup = match self.validating.lookup(fully_qualified(name).as_str(), RecordType::TLSA).await {
            Ok(lookup) => lookup,
            Err(e) => {
                let (mut failure, mut words) = classify(&e);
                // A validating name server in front refuses a bogus answer as SERVFAIL; it
                // gives the answer when asked with checking disabled.
                if failure == DnsFailure::Servfail && self.refused_as_bogus(name, RecordType::TLSA).await {
                    (failure, words) = (
                        DnsFailure::Bogus,
                        "the validating name server answers SERVFAIL, and with checking disabled it answers"
                            .to_owned(),
                    );
                }
                if failure == DnsFailure::Bogus {
                    let verdict = self.confirm_bogus(&format!("TLSA {name}")).await;
                    if verdict.status != DnssecStatus::Bogus {
                        let why = Some(verdict.detail);
                        let value = TlsaSet { dnssec: Dnssec::Indeterminate, records: Vec::new(), why };
                        return Ok(Answer { value, elapsed: started.elapsed(), ttl: Duration::ZERO });
                    }
                }
                return Err(LookupError {
                    ttl: negative_ttl(&e),
                    ..fail(failure, format!("TLSA {name}: {words}"))
                });
            }
        };
        let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
        let answers: Vec<_> =
            lookup.answers().iter().filter(|r| r.record_type() == RecordType::TLSA).collect();
        let proofs: Vec<_> = answers.iter().map(|r| r.proof).collect();
        let records = tlsa_records(answers.iter().map(|r| &r.data));
        if records.is_empty() {
            return Err(fail(DnsFailure::NoRecords, format!("TLSA {name}: no record of this type (NODATA)")));
        }
        // The weakest proof among the records stands for the set.
        let dnssec = match weakest(&proofs) {
            DnssecStatus::Secure => Dnssec::Secure,
            DnssecStatus::Insecure => Dnssec::Insecure,
            DnssecStatus::Bogus => {
                return Err(fail(DnsFailure::Bogus, format!("TLSA {name}: DNSSEC validation failed")))
            }
            _ => Dnssec::Indeterminate,
        };
        let why = (dnssec == Dnssec::Indeterminate)
            .then(|| format!("TLSA {name}: the validator found no trust anchor above it"));
        Ok(Answer { value: TlsaSet { dnssec, records, why }, elapsed: started.elapsed(), ttl })
    }

    /// The TLSA records of `name` from a validating name server, judged by its AD bit.
    async fn tlsa_trusting_ad(&self, name: &str, started: Instant) -> Result<Answer<TlsaSet>, LookupError> {
        let fail = |failure, detail: String| LookupError {
            failure,
            detail,
            elapsed: started.elapsed(),
            ttl: Duration::ZERO,
        };
        let status = self
            .trusting_ad(name, RecordType::TLSA)
            .await
            .map_err(|words| fail(DnsFailure::Other, format!("TLSA {name}: {words}")))?;
        if status == DnssecStatus::Bogus {
            return Err(fail(
                DnsFailure::Bogus,
                format!("TLSA {name}: the validating name server finds it bogus"),
            ));
        }
        let (records, ttl) = self.query(name, RecordType::TLSA).await.map_err(|mut e| {
            e.elapsed = started.elapsed();
            e
        })?;
        let records = tlsa_records(records.iter());
        if records.is_empty() {
            return Err(fail(DnsFailure::NoRecords, format!("TLSA {name}: no record of this type (NODATA)")));
        }
        let dnssec = if status == DnssecStatus::Secure { Dnssec::Secure } else { Dnssec::Insecure };
        Ok(Answer { value: TlsaSet { dnssec, records, why: None }, elapsed: started.elapsed(), ttl })
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
        let mut looked = self.inner.lookup(fqdn.as_str(), record_type).await;
        // An answer that did not fit a UDP datagram, with the TC bit set or not (RFC 7766):
        // asked again over TCP.
        if matches!(&looked, Err(e) if classify(e).0 == DnsFailure::Truncated || matches!(e, NetError::Proto(_)))
        {
            looked = self.tcp.lookup(fqdn.as_str(), record_type).await;
        }
        match looked {
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

/// The MX set an answer's records make (at most [`MAX_MX_HOSTS`] hosts, sorted).
fn mx_set(records: Vec<RData>) -> MxSet {
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
    if hosts.len() == 1 && hosts[0].host.is_empty() {
        MxSet::Null
    } else if hosts.is_empty() {
        MxSet::Implicit
    } else {
        hosts.retain(|mx| !mx.host.is_empty());
        hosts.truncate(MAX_MX_HOSTS);
        MxSet::Hosts(hosts)
    }
}

/// The TLSA records among `data`, sorted, without duplicates, at most
/// [`MAX_TLSA_RECORDS`].
fn tlsa_records<'a>(data: impl Iterator<Item = &'a RData>) -> Vec<crate::dane::Tlsa> {
    let mut records: Vec<crate::dane::Tlsa> = data
        .filter_map(|d| match d {
            RData::TLSA(tlsa) => Some(crate::dane::Tlsa {
                usage: tlsa.cert_usage.into(),
                selector: tlsa.selector.into(),
                matching: tlsa.matching.into(),
                data: tlsa.cert_data.clone(),
            }),
            _ => None,
        })
        .collect();
    records.sort();
    records.dedup();
    records.truncate(MAX_TLSA_RECORDS);
    records
}

/// The status the weakest of `proofs` gives a set of records: bogus if one is, secure if
/// all are, insecure if all are secure or insecure, else indeterminate (and for no proof).
fn weakest(proofs: &[hickory_resolver::proto::dnssec::Proof]) -> DnssecStatus {
    if proofs.is_empty() {
        DnssecStatus::Indeterminate
    } else if proofs.iter().any(|p| p.is_bogus()) {
        DnssecStatus::Bogus
    } else if proofs.iter().all(|p| p.is_secure()) {
        DnssecStatus::Secure
    } else if proofs.iter().all(|p| p.is_secure() || p.is_insecure()) {
        DnssecStatus::Insecure
    } else {
        DnssecStatus::Indeterminate
    }
}

/// How long a negative answer holds, from its SOA; zero for any other error.
/// The validating resolver leaves `negative_ttl` out; the SOA it keeps says the same
/// (RFC 2308 §5: the lower of the SOA's TTL and its minimum).
fn negative_ttl(error: &NetError) -> Duration {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none)) => {
            let from_soa = none.soa.as_ref().map(|soa| soa.ttl.min(soa.data.minimum));
            Duration::from_secs(none.negative_ttl.or(from_soa).map_or(0, u64::from))
        }
        _ => Duration::ZERO,
    }
}

/// Why a resolver cannot be set up: its trust-anchor file (`dns.trust_anchors`, `check
/// --dns-trust-anchors`) cannot be used, or the resolver library refused the settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{}: {cause}", path.display())]
    Read { path: std::path::PathBuf, cause: crate::files::ReadError },
    #[error("{}: not UTF-8 text", path.display())]
    NotUtf8 { path: std::path::PathBuf },
    /// The resolver library's words for what it could not parse.
    #[error("{}: {words}", path.display())]
    Syntax { path: std::path::PathBuf, words: String },
    #[error("{}: no DNSKEY record found", path.display())]
    Empty { path: std::path::PathBuf },
    /// Not expected: the settings are checked before.
    #[error("cannot build the {what}: {words}")]
    Build { what: &'static str, words: String },
}

impl SetupError {
    /// Whether the trust-anchor file is at fault (the rest is the library's).
    pub fn of_trust_anchors(&self) -> bool {
        !matches!(self, SetupError::Build { .. })
    }
}

/// Reads a trust-anchor file: DNSKEY records in zone-file syntax, one per line
/// (`. 3600 IN DNSKEY 257 3 13 …`, as `dig DNSKEY .` prints them).
fn read_trust_anchors(path: &std::path::Path) -> Result<TrustAnchors, SetupError> {
    let owned = || path.to_owned();
    let text = crate::files::read_bounded(path, 1 << 20)
        .map_err(|cause| SetupError::Read { path: owned(), cause })?;
    let text = String::from_utf8(text).map_err(|_| SetupError::NotUtf8 { path: owned() })?;
    let anchors = TrustAnchors::from_str(&text)
        .map_err(|e| SetupError::Syntax { path: owned(), words: e.to_string() })?;
    if anchors.is_empty() {
        return Err(SetupError::Empty { path: owned() });
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

/// The A and AAAA addresses among `records`, each once, in the answer's order.
fn distinct_addresses<'a>(records: impl Iterator<Item = &'a RData>) -> Vec<IpAddr> {
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
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 27: a trust-anchor file that cannot be used says why by its cause, and the
    /// cause is the file's (validation names `dns.trust_anchors` for it).
    #[test]
    fn trust_anchor_files_are_refused_by_their_cause() {
        let read = |path: &std::path::Path| read_trust_anchors(path).err().expect("refused");
        let device = read(std::path::Path::new("/dev/zero"));
        assert!(matches!(&device, SetupError::Read { cause: crate::files::ReadError::NotAFile, .. }));
        assert_eq!(device.to_string(), "/dev/zero: not a regular file");
        let empty = read(&crate::test_support::temp_file("anchors-empty", "; nothing here\n"));
        assert!(matches!(empty, SetupError::Empty { .. }), "{empty}");
        let garbage = read(&crate::test_support::temp_file("anchors-garbage", ". IN DNSKEY what\n"));
        assert!(matches!(garbage, SetupError::Syntax { .. }), "{garbage}");
        assert!([device, empty, garbage].iter().all(SetupError::of_trust_anchors));
        assert!(!SetupError::Build { what: "resolver", words: String::new() }.of_trust_anchors());
    }

    /// Issue 26: each class holds its addresses of both families (an IPv4-mapped IPv6
    /// address as its IPv4), and no other.
    #[test]
    fn address_classes_hold_their_addresses() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let cases = [
            (
                AddressClass::Loopback,
                &["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"][..],
                &["128.0.0.1", "::2"][..],
            ),
            (
                AddressClass::Private,
                &["10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fdff::1"],
                &["172.32.0.1", "fe00::1", "11.0.0.1"],
            ),
            (
                AddressClass::LinkLocal,
                &["169.254.169.254", "fe80::1", "febf::1", "::ffff:169.254.0.1"],
                &["169.255.0.1", "fec0::1"],
            ),
            (AddressClass::Unspecified, &["0.0.0.0", "::"], &["0.0.0.1", "::1"]),
            (
                AddressClass::Multicast,
                &["224.0.0.1", "239.255.255.255", "ff02::1"],
                &["223.255.255.255", "fe02::1"],
            ),
            (AddressClass::Broadcast, &["255.255.255.255"], &["255.255.255.254", "ffff::ffff"]),
        ];
        for (class, inside, outside) in cases {
            for text in inside {
                assert!(class.holds(ip(text)), "{class:?} {text}");
            }
            for text in outside {
                assert!(!class.holds(ip(text)), "{class:?} {text}");
            }
        }
        assert_eq!(AddressClass::parse("link_local"), Ok(AddressClass::LinkLocal));
        assert_eq!(
            AddressClass::parse("local"),
            Err("\"local\" is not one of loopback, private, link_local, unspecified, multicast, broadcast"
                .to_owned())
        );
    }
}
