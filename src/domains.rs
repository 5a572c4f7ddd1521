//! The domain walk: turns each expansion (a mail domain, or a host probed on every
//! address) into probe specs, one per (MX, address, port), and keeps them in step with DNS.
//!
//! Between `config` and the scheduler. For a domain it looks up the MX set (RFC 5321 §5.1:
//! no MX means the domain's own addresses are the implicit MX; a null MX, RFC 7505, means
//! no mail), then every A and AAAA of each MX, as a sender would; for a host, its A and
//! AAAA. [`Walkers`] runs one task per expansion, which walks again when the shortest TTL
//! of what it found runs out (held between `dns.min_ttl` and `dns.max_ttl`), and hands
//! the app a new set of specs only when the set changed; the app gives the scheduler the
//! configured specs and every walk's specs together. What each walk found is kept in
//! [`Resolutions`] for the domain series and the status page.
//!
//! A definitive answer (NXDOMAIN, no record, a null MX) replaces the specs; a transient
//! failure (SERVFAIL, timeout, REFUSED) keeps the specs of the last good answer for the
//! part it hit, so that one lost packet does not reset a domain's series, while the
//! domain's own series say that its DNS fails.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Expansion, ExpansionKind, ProbeSpec, Scheduled, Via};
use crate::dns::{
    DnsFailure, DnsSettings, Dnssec, DnssecStatus, DnssecVerdict, Family, MxSet, Resolver, TlsaSet,
};

/// How many walks run at once: a fleet of domains starting together queues here rather
/// than in the resolver.
const CONCURRENT_WALKS: usize = 32;

/// One query of a walk, for `smtp_domain_dns_lookup_seconds`.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// The name asked.
    pub name: String,
    /// `mx`, `a` or `aaaa`.
    pub kind: &'static str,
    pub elapsed: Duration,
    pub failure: Option<DnsFailure>,
}

/// One MX host (or, for a host expansion, the host) and what its addresses are.
#[derive(Clone, Debug)]
pub struct MxFound {
    pub preference: u16,
    pub host: String,
    pub addresses: Vec<IpAddr>,
    /// The TLSA lookup at `_<port>._tcp.<host>` for the delivery port, when the domain
    /// checks DANE: the records, or why there are none.
    pub tlsa: Option<Result<Arc<TlsaSet>, (DnsFailure, String)>>,
    /// Why senders do not use this MX at all (it names an address, not a host).
    pub skipped: Option<String>,
}

impl MxFound {
    /// How many of the MX's TLSA records SMTP can use, from a secure answer; 0 otherwise.
    pub fn usable_tlsa(&self) -> usize {
        match &self.tlsa {
            Some(Ok(set)) if set.dnssec == Dnssec::Secure => {
                set.records.iter().filter(|r| r.usable()).count()
            }
            _ => 0,
        }
    }
}

/// What a TLSA lookup said, from a fixed set: the `status` label of
/// `smtp_domain_dane_tlsa_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum TlsaStatus {
    /// Records, with a valid DNSSEC chain: DANE applies.
    Secure,
    /// Records in an unsigned zone: DANE does not apply.
    Insecure,
    /// Records whose DNSSEC status the validator could not decide.
    Indeterminate,
    /// The DNSSEC signatures do not validate: DANE senders defer all mail.
    Bogus,
    /// No TLSA record (NODATA or NXDOMAIN): DANE does not apply.
    None,
    /// The lookup failed (SERVFAIL, timeout, ...).
    Failed,
}

impl TlsaStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn of(lookup: &Result<Arc<TlsaSet>, (DnsFailure, String)>) -> TlsaStatus {
        match lookup {
            Ok(set) => match set.dnssec {
                Dnssec::Secure => TlsaStatus::Secure,
                Dnssec::Insecure => TlsaStatus::Insecure,
                Dnssec::Indeterminate => TlsaStatus::Indeterminate,
            },
            Err((DnsFailure::NoRecords | DnsFailure::Nxdomain, _)) => TlsaStatus::None,
            Err((DnsFailure::Bogus, _)) => TlsaStatus::Bogus,
            Err(_) => TlsaStatus::Failed,
        }
    }
}

/// Why DANE fails for an MX, from a fixed set: the `reason` label of
/// `smtp_domain_dane_failure_info`. Under every one but `NoUsableRecords` a
/// DANE-validating sender does not deliver to the MX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum DaneFailure {
    /// The TLSA answer's DNSSEC signatures do not validate.
    Bogus,
    /// The TLSA lookup failed, or its DNSSEC status could not be decided.
    LookupFailed,
    /// Secure TLSA records, none of them usable for SMTP (PKIX usages, unknown types).
    NoUsableRecords,
    /// An address presented a chain that matches no usable record.
    NoMatch,
    /// No address completed a TLS handshake in its last probe.
    NoTls,
}

impl DaneFailure {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What it means for senders, in words.
    pub fn explain(self) -> &'static str {
        match self {
            DaneFailure::Bogus => "the TLSA answer fails DNSSEC validation; DANE-validating senders defer all mail to it",
            DaneFailure::LookupFailed => "its TLSA records cannot be looked up; DANE-validating senders defer mail to it",
            DaneFailure::NoUsableRecords => "its TLSA records are all unusable for SMTP (only DANE-TA(2) and DANE-EE(3) count); DANE-validating senders only insist on TLS",
            DaneFailure::NoMatch => "DANE-validating senders will not deliver to it",
            DaneFailure::NoTls => "no address completed a TLS handshake; DANE-validating senders will not deliver to it",
        }
    }
}

/// The name of the TLSA records of a service on `port` of `host` (RFC 6698 §3).
pub fn tlsa_name(port: u16, host: &str) -> String {
    format!("_{port}._tcp.{host}")
}

/// What the last walk of an expansion found.
#[derive(Clone, Debug)]
pub struct Resolution {
    pub name: String,
    pub kind: ExpansionKind,
    /// When the walk ended.
    pub at: SystemTime,
    /// Why the walk could not find where mail goes: the MX lookup failed (a domain), or
    /// every address lookup did (a host). Absent for a null MX.
    pub failure: Option<(DnsFailure, String)>,
    pub null_mx: bool,
    /// The domain has no MX record and its own addresses serve.
    pub implicit_mx: bool,
    /// In preference order.
    pub mx: Vec<MxFound>,
    pub lookups: Vec<Lookup>,
    /// The port whose sessions decide whether the domain is deliverable (its first port).
    pub delivery_port: u16,
    pub delivery_module: String,
    /// The last MTA-STS and TLS-RPT check, for a domain that has them on.
    pub policy: Option<Arc<crate::policy::PolicyReport>>,
    /// What DNSSEC says of the domain's own MX (or its addresses, with an implicit MX);
    /// `None` for a host expansion, or a domain whose MX lookup failed outright.
    pub dnssec: Option<DnssecVerdict>,
}

impl Resolution {
    /// Whether validating resolvers fail the domain's own records.
    pub fn bogus(&self) -> bool {
        self.dnssec.as_ref().is_some_and(|d| d.status == DnssecStatus::Bogus)
    }

    /// The lowest preference among the MX hosts, if any.
    pub fn primary_preference(&self) -> Option<u16> {
        // An MX senders skip (it names an address) is nobody's primary.
        self.mx.iter().filter(|m| m.skipped.is_none()).map(|m| m.preference).min()
    }
}

/// Which MX hosts of the walked domains accepted a session on their delivery port, from
/// the latest reports: what `smtp_domain_deliverable` and the status page say.
pub struct Accepted<'a> {
    /// Per (domain, MX): whether an IPv4 and an IPv6 address accepted.
    by_mx: HashMap<(&'a str, &'a str), [bool; 2]>,
    /// Whether some address of the MX presented a certificate valid for the MX's name.
    cert_valid: HashMap<(&'a str, &'a str), bool>,
    /// Per (domain, MX): how many addresses' chains matched the TLSA records, and how many
    /// did not.
    dane: HashMap<(&'a str, &'a str), [usize; 2]>,
}

impl<'a> Accepted<'a> {
    /// From each spec's key and its last report, if any.
    pub fn new(
        walks: &'a [Arc<Resolution>],
        results: impl Iterator<Item = (&'a crate::config::SpecKey, Option<&'a crate::probe::ProbeReport>)>,
    ) -> Accepted<'a> {
        let delivery: HashMap<&str, (u16, &str)> =
            walks.iter().map(|w| (w.name.as_str(), (w.delivery_port, w.delivery_module.as_str()))).collect();
        let mut by_mx: HashMap<(&str, &str), [bool; 2]> = HashMap::new();
        let mut cert_valid: HashMap<(&str, &str), bool> = HashMap::new();
        let mut dane: HashMap<(&str, &str), [usize; 2]> = HashMap::new();
        for (key, report) in results {
            let Some(via) = &key.via else { continue };
            if delivery.get(key.target.as_str()) == Some(&(key.port, key.module.as_str())) {
                let at = (key.target.as_str(), via.mx.as_str());
                let family = usize::from(Family::of(via.address) == Family::Ip6);
                by_mx.entry(at).or_default()[family] |= report.is_some_and(|r| r.success());
                let valid = report.and_then(|r| r.tls.as_ref()).is_some_and(|t| t.cert_error.is_none());
                *cert_valid.entry(at).or_default() |= valid;
                if let Some(outcome) = report.and_then(|r| r.tls.as_ref()).and_then(|t| t.dane.as_ref()) {
                    dane.entry(at).or_default()[usize::from(outcome.matched.is_none())] += 1;
                }
            }
        }
        Accepted { by_mx, cert_valid, dane }
    }

    /// What DANE says of `mx` from the last probes of its addresses: `None` when DANE does
    /// not apply (no secure, usable TLSA record), else the failure, if any.
    pub fn dane(&self, walk: &Resolution, mx: &MxFound) -> Option<Result<(), DaneFailure>> {
        let status = TlsaStatus::of(mx.tlsa.as_ref()?);
        let usable = match status {
            TlsaStatus::Bogus => return Some(Err(DaneFailure::Bogus)),
            TlsaStatus::Failed => return Some(Err(DaneFailure::LookupFailed)),
            TlsaStatus::Secure => mx.usable_tlsa(),
            // Not judged: the exporter's resolver cannot prove what senders would see.
            TlsaStatus::Insecure | TlsaStatus::None | TlsaStatus::Indeterminate => return None,
        };
        if usable == 0 {
            return Some(Err(DaneFailure::NoUsableRecords));
        }
        Some(match self.dane.get(&(walk.name.as_str(), mx.host.as_str())).copied().unwrap_or_default() {
            [_, mismatched] if mismatched > 0 => Err(DaneFailure::NoMatch),
            [0, 0] => Err(DaneFailure::NoTls),
            _ => Ok(()),
        })
    }

    /// The families in which some address of `mx` accepted.
    pub fn families(&self, walk: &Resolution, mx: &str) -> Vec<Family> {
        let accepted = self.by_mx.get(&(walk.name.as_str(), mx)).copied().unwrap_or_default();
        [Family::Ip4, Family::Ip6].into_iter().zip(accepted).filter(|(_, ok)| *ok).map(|(f, _)| f).collect()
    }

    /// Whether some address of `mx` accepted.
    pub fn mx(&self, walk: &Resolution, mx: &str) -> bool {
        !self.families(walk, mx).is_empty()
    }

    /// Whether some address of `mx` completed a TLS handshake with a certificate valid for
    /// the MX's name (what MTA-STS asks of it).
    pub fn cert_valid(&self, walk: &Resolution, mx: &str) -> bool {
        self.cert_valid.get(&(walk.name.as_str(), mx)).copied().unwrap_or(false)
    }

    /// Whether some MX accepted, and the walk found where mail goes, as validating senders
    /// can find it too (a bogus domain's MX is a SERVFAIL to them).
    pub fn deliverable(&self, walk: &Resolution) -> bool {
        walk.failure.is_none()
            && !walk.null_mx
            && !walk.bogus()
            && walk.mx.iter().any(|m| self.mx(walk, &m.host))
    }

    /// Whether an MX of the lowest preference accepted (and the domain is not bogus).
    pub fn primary(&self, walk: &Resolution) -> bool {
        let primary = walk.primary_preference();
        walk.failure.is_none()
            && !walk.null_mx
            && !walk.bogus()
            && walk.mx.iter().filter(|m| Some(m.preference) == primary).any(|m| self.mx(walk, &m.host))
    }
}

/// The result of one walk: the specs, what was found, and when to walk again.
pub struct Walked {
    pub specs: Vec<Arc<Scheduled>>,
    pub resolution: Resolution,
    pub next: Duration,
}

/// Walks `expansion` once. `previous` holds the specs of the last walk, kept where a
/// transient failure hides the answer.
pub async fn walk(
    expansion: &Expansion,
    resolver: &Arc<Resolver>,
    dns: &DnsSettings,
    previous: &[Arc<Scheduled>],
) -> Walked {
    let mut resolution = Resolution {
        name: expansion.name.clone(),
        kind: expansion.kind.clone(),
        at: SystemTime::now(),
        failure: None,
        null_mx: false,
        implicit_mx: false,
        mx: Vec::new(),
        lookups: Vec::new(),
        delivery_port: expansion.ports[0].port,
        delivery_module: expansion.ports[0].module_name.clone(),
        policy: None,
        dnssec: None,
    };
    let mut ttl = dns.max_ttl;
    let mut specs = Vec::new();
    // The hosts to resolve: (preference, host name, MX label).
    let hosts: Vec<(u16, String, String)> = match &expansion.kind {
        ExpansionKind::Host(host) => vec![(0, host.clone(), String::new())],
        ExpansionKind::Domain => match mx_of(expansion, resolver, &mut resolution).await {
            Ok(answer) => {
                resolution.lookups.push(Lookup {
                    name: expansion.name.clone(),
                    kind: "mx",
                    elapsed: answer.elapsed,
                    failure: None,
                });
                ttl = ttl.min(answer.ttl);
                match answer.value {
                    MxSet::Null => {
                        resolution.null_mx = true;
                        vec![]
                    }
                    MxSet::Implicit => {
                        resolution.implicit_mx = true;
                        vec![(0, expansion.name.clone(), expansion.name.clone())]
                    }
                    MxSet::Hosts(hosts) => {
                        hosts.into_iter().map(|mx| (mx.preference, mx.host.clone(), mx.host)).collect()
                    }
                }
            }
            Err(e) => {
                resolution.lookups.push(Lookup {
                    name: expansion.name.clone(),
                    kind: "mx",
                    elapsed: e.elapsed,
                    failure: Some(e.failure),
                });
                let definitive = e.failure == DnsFailure::Nxdomain;
                if !definitive {
                    specs.extend(previous.iter().cloned());
                }
                resolution.failure = Some((e.failure, e.detail));
                resolution.at = SystemTime::now();
                let next = if definitive { e.ttl.max(dns.min_ttl) } else { dns.min_ttl };
                return Walked { specs, resolution, next: next.min(dns.max_ttl) };
            }
        },
    };
    let mut failures = Vec::new();
    let dane = expansion.kind == ExpansionKind::Domain
        && expansion.policy.as_ref().is_some_and(|p| p.dane)
        && resolver.dnssec_mode() != crate::dns::DnssecMode::Off;
    for (preference, host, mx_label) in hosts {
        let mut found =
            MxFound { preference, host: host.clone(), addresses: Vec::new(), tlsa: None, skipped: None };
        // RFC 5321 §5.1 wants a host name: Postfix skips an MX that names an address, Exim
        // refuses it (unless allow_mx_to_ip). The implicit MX is the domain itself.
        if !resolution.implicit_mx
            && expansion.kind == ExpansionKind::Domain
            && host.parse::<IpAddr>().is_ok()
        {
            let why = format!("MX {preference} {host} names an address, not a host: senders do not use it");
            failures.push((DnsFailure::MxIpLiteral, why.clone()));
            found.skipped = Some(why);
            resolution.mx.push(found);
            continue;
        }
        // The records the delivery port's specs match, from a secure answer; after a
        // transient failure, those the last walk found.
        let mut secure_tlsa = None;
        if dane {
            let name = tlsa_name(expansion.ports[0].port, &host);
            let lookup = resolver.tlsa(&name).await;
            let (elapsed, failure) = match &lookup {
                Ok(answer) => (answer.elapsed, None),
                Err(e) => (e.elapsed, Some(e.failure)),
            };
            resolution.lookups.push(Lookup { name, kind: "tlsa", elapsed, failure });
            found.tlsa = Some(match lookup {
                Ok(answer) => {
                    ttl = ttl.min(answer.ttl);
                    let set = Arc::new(answer.value);
                    secure_tlsa = (set.dnssec == Dnssec::Secure).then(|| set.clone());
                    Ok(set)
                }
                Err(e) => {
                    if matches!(e.failure, DnsFailure::NoRecords | DnsFailure::Nxdomain | DnsFailure::Bogus) {
                        if e.ttl > Duration::ZERO {
                            ttl = ttl.min(e.ttl);
                        }
                    } else {
                        ttl = ttl.min(dns.min_ttl);
                        secure_tlsa = previous
                            .iter()
                            .find(|s| {
                                s.spec.via.as_ref().is_some_and(|v| v.mx == mx_label) && s.spec.tlsa.is_some()
                            })
                            .and_then(|s| s.spec.tlsa.clone());
                    }
                    Err((e.failure, e.detail))
                }
            });
        }
        for &family in expansion.families {
            let kind = if family == Family::Ip4 { "a" } else { "aaaa" };
            let mut lookup = resolver.addresses(&host, family).await;
            // A bogus domain's MX hosts are refused as SERVFAIL by a validating name
            // server too: asked again with checking disabled, as its MX was.
            if resolution.bogus() && matches!(&lookup, Err(e) if e.failure == DnsFailure::Servfail) {
                lookup = resolver.addresses_unchecked(&host, family).await;
            }
            match lookup {
                Ok(answer) => {
                    resolution.lookups.push(Lookup {
                        name: host.clone(),
                        kind,
                        elapsed: answer.elapsed,
                        failure: None,
                    });
                    ttl = ttl.min(answer.ttl);
                    for address in answer.value {
                        found.addresses.push(address);
                        let via = Arc::new(Via { mx: mx_label.clone(), address });
                        specs.extend(specs_for(expansion, &host, via, secure_tlsa.as_ref(), resolver));
                    }
                }
                Err(e) => {
                    resolution.lookups.push(Lookup {
                        name: host.clone(),
                        kind,
                        elapsed: e.elapsed,
                        failure: Some(e.failure),
                    });
                    if matches!(
                        e.failure,
                        DnsFailure::NoRecords | DnsFailure::Nxdomain | DnsFailure::AddressRefused
                    ) {
                        if e.ttl > Duration::ZERO {
                            ttl = ttl.min(e.ttl);
                        }
                    } else {
                        // Transient: keep probing what the last good answer gave.
                        ttl = ttl.min(dns.min_ttl);
                        specs.extend(
                            previous
                                .iter()
                                .filter(|s| {
                                    s.spec
                                        .via
                                        .as_ref()
                                        .is_some_and(|v| v.mx == mx_label && Family::of(v.address) == family)
                                        && s.spec.host == host
                                })
                                .cloned(),
                        );
                    }
                    failures.push((e.failure, e.detail));
                }
            }
        }
        resolution.mx.push(found);
    }
    // A host with no address at all, or a domain none of whose MX has one, cannot be
    // reached: that is the walk's failure, with the first reason met.
    if resolution.mx.iter().all(|m| m.addresses.is_empty()) && !resolution.null_mx {
        resolution.failure = failures.into_iter().next();
    }
    resolution.at = SystemTime::now();
    Walked { specs, resolution, next: ttl.clamp(dns.min_ttl, dns.max_ttl) }
}

/// The MX lookup of a domain walk, with what DNSSEC says of it in `resolution`. A SERVFAIL
/// that the same question with checking disabled does not get is a validating name server
/// refusing a bogus domain: the MX hosts it holds are still walked (and probed), and the
/// domain is bogus.
async fn mx_of(
    expansion: &Expansion,
    resolver: &Resolver,
    resolution: &mut Resolution,
) -> Result<crate::dns::Answer<MxSet>, crate::dns::LookupError> {
    if resolver.dnssec_mode() == crate::dns::DnssecMode::Off {
        resolution.dnssec =
            Some(DnssecVerdict { status: DnssecStatus::NotChecked, detail: "dns.dnssec is off".into() });
        return resolver.mx(&expansion.name).await;
    }
    let answer = match resolver.mx(&expansion.name).await {
        Err(e) if e.failure == DnsFailure::Servfail => match resolver.mx_unchecked(&expansion.name).await {
            Some(answer) => {
                resolution.dnssec = Some(DnssecVerdict {
                        status: DnssecStatus::Bogus,
                        detail: format!(
                            "MX {}: the name server answers SERVFAIL, and with checking disabled it answers: it validates, and the domain fails validation",
                            expansion.name
                        ),
                    });
                return Ok(answer);
            }
            None => return Err(e),
        },
        other => other?,
    };
    // The records validating senders need: the MX, or the domain's addresses for an
    // implicit MX. A null MX is judged by its MX record.
    let record_type = match answer.value {
        MxSet::Implicit => hickory_resolver::proto::rr::RecordType::A,
        _ => hickory_resolver::proto::rr::RecordType::MX,
    };
    resolution.dnssec = Some(resolver.dnssec_of(&expansion.name, record_type).await);
    Ok(answer)
}

/// The specs of one address: one per port of the expansion, checked against `host`'s name.
/// The delivery port's (the first) carry `tlsa`.
fn specs_for(
    expansion: &Expansion,
    host: &str,
    via: Arc<Via>,
    tlsa: Option<&Arc<TlsaSet>>,
    resolver: &Arc<Resolver>,
) -> Vec<Arc<Scheduled>> {
    expansion
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, port)| {
            let spec = port.module.spec(
                &expansion.name,
                host,
                port.port,
                &port.module_name,
                expansion.expect.clone(),
                resolver,
            );
            match spec {
                Ok(spec) => Some(Arc::new(Scheduled {
                    spec: ProbeSpec {
                        via: Some(via.clone()),
                        tlsa: if i == 0 { tlsa.cloned() } else { None },
                        ..spec
                    },
                    interval: expansion.interval,
                })),
                Err(e) => {
                    tracing::warn!(expansion = %expansion.name, host, error = %e, "an MX name cannot be checked against a certificate; not probed");
                    None
                }
            }
        })
        .collect()
}

/// What every expansion's last walk found, by name.
#[derive(Default)]
pub struct Resolutions {
    walks: RwLock<BTreeMap<String, Arc<Resolution>>>,
    /// What the name servers showed of DNSSEC, when domains are walked and DNSSEC judged.
    capability: RwLock<Option<Arc<crate::dns::Capability>>>,
}

impl Resolutions {
    /// What the name servers last showed of DNSSEC, if it matters.
    pub fn capability(&self) -> Option<Arc<crate::dns::Capability>> {
        self.capability.read().expect("capability lock").clone()
    }

    fn set_capability(&self, capability: Option<Arc<crate::dns::Capability>>) {
        *self.capability.write().expect("capability lock") = capability;
    }

    pub fn snapshot(&self) -> Vec<Arc<Resolution>> {
        self.walks.read().expect("resolutions lock").values().cloned().collect()
    }

    /// The last policy check of `name`, kept across a reload.
    fn policy_of(&self, name: &str) -> Option<Arc<crate::policy::PolicyReport>> {
        self.walks.read().expect("resolutions lock").get(name).and_then(|w| w.policy.clone())
    }

    fn set(&self, resolution: Resolution) {
        self.walks.write().expect("resolutions lock").insert(resolution.name.clone(), Arc::new(resolution));
    }

    /// Forgets the expansions no longer configured.
    fn keep(&self, names: &[&str]) {
        self.walks.write().expect("resolutions lock").retain(|name, _| names.contains(&name.as_str()));
    }
}

/// A walk's new set of specs, for the app to hand the scheduler.
pub struct Derived {
    /// Which configuration the walk belongs to: messages of an older one are dropped.
    pub generation: u64,
    pub name: String,
    pub specs: Vec<Arc<Scheduled>>,
}

/// The walk tasks of the current configuration.
pub struct Walkers {
    generation: u64,
    current: Option<CancellationToken>,
    tracker: TaskTracker,
    tx: mpsc::UnboundedSender<Derived>,
    pub resolutions: Arc<Resolutions>,
    limit: Arc<Semaphore>,
}

impl Walkers {
    pub fn new(tx: mpsc::UnboundedSender<Derived>, resolutions: Arc<Resolutions>) -> Walkers {
        Walkers {
            generation: 0,
            current: None,
            tracker: TaskTracker::new(),
            tx,
            resolutions,
            limit: Arc::new(Semaphore::new(CONCURRENT_WALKS)),
        }
    }

    /// The generation of the configuration last applied.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stops the walks of the previous configuration and starts those of `config`, each
    /// with the specs it had (`previous`), walking at once.
    pub fn apply(&mut self, config: &Config, previous: &HashMap<String, Vec<Arc<Scheduled>>>) {
        if let Some(token) = self.current.take() {
            token.cancel();
        }
        self.generation += 1;
        let names: Vec<&str> = config.expansions.iter().map(|e| e.name.as_str()).collect();
        self.resolutions.keep(&names);
        let token = CancellationToken::new();
        for expansion in &config.expansions {
            let task = WalkTask {
                generation: self.generation,
                expansion: expansion.clone(),
                resolver: config.resolver.clone(),
                dns: config.dns.clone(),
                last: previous.get(&expansion.name).cloned(),
                tx: self.tx.clone(),
                resolutions: self.resolutions.clone(),
                limit: self.limit.clone(),
                policy: self.resolutions.policy_of(&expansion.name),
                policy_due: tokio::time::Instant::now(),
            };
            let stop = token.clone();
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = task.run() => {}
                }
            });
        }
        // Whether DNSSEC can be judged through this configuration's name servers: asked
        // now, at every start and reload, for the self-metric and the log.
        if config.expansions.iter().any(|e| e.kind == ExpansionKind::Domain)
            && config.resolver.dnssec_mode() != crate::dns::DnssecMode::Off
        {
            let (resolver, resolutions, stop) =
                (config.resolver.clone(), self.resolutions.clone(), token.clone());
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    capability = resolver.dnssec_capability(true) => resolutions.set_capability(Some(capability)),
                }
            });
        } else {
            self.resolutions.set_capability(None);
        }
        self.current = Some(token);
    }

    /// Stops every walk.
    pub async fn stop(&mut self) {
        if let Some(token) = self.current.take() {
            token.cancel();
        }
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
    }
}

struct WalkTask {
    generation: u64,
    expansion: Arc<Expansion>,
    resolver: Arc<Resolver>,
    dns: DnsSettings,
    /// The specs last handed on; `None` before the first hand-over.
    last: Option<Vec<Arc<Scheduled>>>,
    tx: mpsc::UnboundedSender<Derived>,
    resolutions: Arc<Resolutions>,
    limit: Arc<Semaphore>,
    /// The last policy check, and when the next is due.
    policy: Option<Arc<crate::policy::PolicyReport>>,
    policy_due: tokio::time::Instant,
}

impl WalkTask {
    async fn run(mut self) {
        // After a reload the same specs are handed on again, with the new settings.
        let mut handed_on = false;
        loop {
            let mut walked = {
                let _permit = self.limit.acquire().await;
                let previous = self.last.as_deref().unwrap_or(&[]);
                // Boxed: a sleeping task then keeps no room for the walk's lookups.
                Box::pin(walk(&self.expansion, &self.resolver, &self.dns, previous)).await
            };
            if let Some(policy) = &self.expansion.policy {
                if tokio::time::Instant::now() >= self.policy_due {
                    let _permit = self.limit.acquire().await;
                    let previous = self.policy.as_deref();
                    let checked = Box::pin(crate::policy::check(
                        &self.expansion.name,
                        &self.resolver,
                        &policy.settings,
                        previous,
                    ))
                    .await;
                    self.policy = Some(Arc::new(checked));
                    self.policy_due = tokio::time::Instant::now() + policy.interval;
                }
                walked.resolution.policy = self.policy.clone();
            }
            if walked.resolution.dnssec.is_some()
                && self.resolver.dnssec_mode() != crate::dns::DnssecMode::Off
            {
                self.resolutions.set_capability(Some(self.resolver.dnssec_capability(false).await));
            }
            self.resolutions.set(walked.resolution);
            // A spec changes with its TLSA records too (a certificate rollover).
            fn keys(specs: &[Arc<Scheduled>]) -> Vec<(crate::config::SpecKey, Option<&[crate::dane::Tlsa]>)> {
                let mut keys: Vec<_> = specs
                    .iter()
                    .map(|s| (s.spec.key(), s.spec.tlsa.as_deref().map(|t| t.records.as_slice())))
                    .collect();
                keys.sort();
                keys
            }
            let changed = match &self.last {
                Some(last) => keys(last) != keys(&walked.specs),
                None => true,
            };
            if changed || !handed_on {
                let derived = Derived {
                    generation: self.generation,
                    name: self.expansion.name.clone(),
                    specs: walked.specs.clone(),
                };
                if self.tx.send(derived).is_err() {
                    return;
                }
                handed_on = true;
            }
            self.last = Some(walked.specs);
            tokio::time::sleep(walked.next).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dane::{Outcome, Tlsa};
    use crate::probe::ProbeReport;

    /// A walk of `d.test` (port 25, module relay) that found `mx`.
    fn walk_of(mx: Vec<MxFound>) -> Resolution {
        Resolution { at: SystemTime::now(), ..crate::test_support::walk("d.test", mx) }
    }

    /// The key of `d.test`'s spec through `mx` at 192.0.2.1.
    fn key_via(mx: &str) -> crate::config::SpecKey {
        crate::config::SpecKey {
            target: "d.test".into(),
            port: 25,
            module: "relay".into(),
            via: Some(Arc::new(Via { mx: mx.into(), address: "192.0.2.1".parse().unwrap() })),
        }
    }

    fn tls(outcome: Option<Outcome>) -> crate::tls::TlsInfo {
        crate::tls::TlsInfo { dane: outcome, ..crate::test_support::tls_info() }
    }

    /// Issue 14, judged hermetically: a secure MX whose probes matched holds; one whose
    /// probe did not match is no_match; one with no handshake is no_tls; a secure set
    /// without usable records is no_usable_records; bogus and failed lookups say so; an
    /// insecure answer or none means DANE does not apply.
    #[test]
    fn dane_is_judged_per_mx_from_the_lookup_and_the_probes() {
        let record = Tlsa { usage: 3, selector: 1, matching: 1, data: vec![1; 32] };
        let set = |dnssec, records: Vec<Tlsa>| Some(Ok(Arc::new(TlsaSet { dnssec, records, why: None })));
        let mx = |host: &str, tlsa| MxFound {
            preference: 10,
            host: host.into(),
            addresses: vec![],
            tlsa,
            skipped: None,
        };
        let pkix = Tlsa { usage: 1, ..record.clone() };
        let walk = walk_of(vec![
            mx("ok", set(Dnssec::Secure, vec![record.clone(), pkix.clone()])),
            mx("stale", set(Dnssec::Secure, vec![record.clone()])),
            mx("silent", set(Dnssec::Secure, vec![record.clone()])),
            mx("pkix", set(Dnssec::Secure, vec![pkix])),
            mx("unsigned", set(Dnssec::Insecure, vec![record.clone()])),
            mx("bogus", Some(Err((DnsFailure::Bogus, String::new())))),
            mx("failed", Some(Err((DnsFailure::Servfail, String::new())))),
            mx("none", Some(Err((DnsFailure::NoRecords, String::new())))),
            mx("off", None),
        ]);
        let key = key_via;
        let report = |matched: bool| {
            let mut r = ProbeReport::new();
            r.tls = Some(tls(Some(Outcome {
                usable: 1,
                matched: matched.then(|| record.clone()),
                anchor: matched.then_some(0),
            })));
            r
        };
        let keys = [key("ok"), key("stale"), key("silent")];
        let reports = [report(true), report(false), ProbeReport::new()];
        let walks = [Arc::new(walk)];
        let accepted = Accepted::new(&walks, keys.iter().zip(reports.iter().map(Some)));
        let walk = &walks[0];
        let judged: Vec<_> =
            walk.mx.iter().map(|m| (m.host.as_str(), accepted.dane(walk, m), m.usable_tlsa())).collect();
        assert_eq!(
            judged,
            vec![
                ("ok", Some(Ok(())), 1),
                ("stale", Some(Err(DaneFailure::NoMatch)), 1),
                ("silent", Some(Err(DaneFailure::NoTls)), 1),
                ("pkix", Some(Err(DaneFailure::NoUsableRecords)), 0),
                ("unsigned", None, 0),
                ("bogus", Some(Err(DaneFailure::Bogus)), 0),
                ("failed", Some(Err(DaneFailure::LookupFailed)), 0),
                ("none", None, 0),
                ("off", None, 0),
            ]
        );
    }

    /// Issue 17: a domain is deliverable when some MX accepted and the walk found where
    /// mail goes (no failure, no null MX); its primary is judged on the MX hosts of the
    /// lowest preference only.
    #[test]
    fn deliverable_and_primary_need_a_good_walk() {
        let mx = |host: &str, preference| MxFound {
            preference,
            host: host.into(),
            addresses: vec![],
            tlsa: None,
            skipped: None,
        };
        let walk = |failure: Option<(DnsFailure, String)>, null_mx: bool| Resolution {
            failure,
            null_mx,
            ..walk_of(vec![mx("primary", 10), mx("backup", 20)])
        };
        let key = key_via;
        let failed = {
            let mut r = ProbeReport::new();
            r.failure = Some(crate::probe::Failure {
                phase: crate::probe::Phase::Connect,
                reason: crate::probe::Reason::Refused,
                detail: String::new(),
            });
            r
        };
        let keys = [key("primary"), key("backup")];
        let judge = |walk: Resolution, primary_ok: bool| {
            let walks = [Arc::new(walk)];
            let reports = [if primary_ok { ProbeReport::new() } else { failed.clone() }, ProbeReport::new()];
            let accepted = Accepted::new(&walks, keys.iter().zip(reports.iter().map(Some)));
            (accepted.deliverable(&walks[0]), accepted.primary(&walks[0]))
        };
        assert_eq!(judge(walk(None, false), true), (true, true));
        assert_eq!(judge(walk(None, false), false), (true, false), "only the backup accepted");
        assert_eq!(judge(walk(Some((DnsFailure::Servfail, String::new())), false), true), (false, false));
        assert_eq!(judge(walk(None, true), true), (false, false), "a null MX takes no mail");
    }
}
