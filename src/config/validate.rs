//! Validation: the raw configuration in, the model out, one invariant per one-line error.
//!
//! Second step of `config::parse_in`, after `raw`. Each function checks one part and
//! prefixes its errors with that part's field path (`targets[2].ports[0].module: ...`).
//! The I/O a configuration needs (reading a password file or variable, loading CA files
//! into TLS settings) happens here, in `read_password` and `tls_transport`, so that a bad
//! file is a configuration error rather than a probe failure.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::model::{
    Auth, AuthMechanism, CredentialSource, Credentials, Delivery, Envelope, EnvelopeExpect,
    EnvelopeRecipient, ExpandedPort, Expansion, ExpansionKind, Expectations, Imap, IpProtocol, Module,
    PolicyCheck, Scheduled, Secret, Tls, TlsMode, Transport,
};
use super::raw::{
    CertPolicy, ImapTlsMode, RawAuth, RawConfig, RawDelivery, RawDns, RawDomain, RawEnvelope, RawExpect,
    RawImap, RawModule, RawPolicy, RawPort, RawProbeEndpoint, RawTarget, RawTlsConfig,
};
use super::{
    format_duration, on_demand::unknown_module, parse_duration, Config, ProbeEndpoint, DEFAULT_EHLO_HOSTNAME,
    DEFAULT_INTERVAL, DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT,
};
use crate::dns::{DnsSettings, Resolver};
use crate::tls::{Roots, TlsSettings};

/// Below this, a banner deadline on port 25 cuts off an MX behind Postfix's postscreen,
/// which holds its greeting's last line for 6 s (`postscreen_greet_wait`).
const POSTSCREEN_GREET_MARGIN: Duration = Duration::from_secs(7);

/// The range of `interval`: below a second, a spec would be probed hundreds of times a
/// second; above a day, results go stale unnoticed.
const INTERVAL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(24 * 3600));
/// The range of `timeout` and `phase_timeout`.
pub const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(600));
/// The range of `max_concurrency`: each probe holds one socket, so keep it well below the
/// exporter's open-file limit.
const MAX_CONCURRENCY_RANGE: (usize, usize) = (1, 4096);

/// A duration from the configuration, or `default`, within `range`.
pub(super) fn duration_in(
    text: Option<&str>,
    default: Duration,
    range: (Duration, Duration),
) -> Result<Duration, String> {
    let value = match text {
        Some(text) => parse_duration(text)?,
        None => default,
    };
    if value < range.0 || value > range.1 {
        return Err(format!(
            "{} is out of range ({} to {})",
            format_duration(value),
            format_duration(range.0),
            format_duration(range.1)
        ));
    }
    Ok(value)
}

pub(super) fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, String> {
    let interval = duration_in(raw.interval.as_deref(), DEFAULT_INTERVAL, INTERVAL_RANGE)
        .map_err(|e| format!("interval: {e}"))?;
    let max_concurrency = raw.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
    if !(MAX_CONCURRENCY_RANGE.0..=MAX_CONCURRENCY_RANGE.1).contains(&max_concurrency) {
        return Err(format!(
            "max_concurrency: {max_concurrency} is out of range ({} to {}; each probe holds one socket)",
            MAX_CONCURRENCY_RANGE.0, MAX_CONCURRENCY_RANGE.1
        ));
    }
    let mut modules = BTreeMap::new();
    for (name, raw_module) in raw.modules {
        let module = validate_module(raw_module, base_dir).map_err(|e| format!("modules.{name}.{e}"))?;
        modules.insert(name, Arc::new(module));
    }
    let dns = validate_dns(raw.dns, base_dir).map_err(|e| format!("dns.{e}"))?;
    let resolver = Resolver::new(&dns).map_err(|e| {
        let field = if e.of_trust_anchors() { "dns.trust_anchors" } else { "dns" };
        format!("{field}: {e}")
    })?;
    let mut schedule = Vec::new();
    let mut expansions = Vec::new();
    let mut seen = HashSet::new();
    for (i, target) in raw.targets.into_iter().enumerate() {
        let at = format!("targets[{i}]");
        let (scheduled, expansion) = validate_target(target, interval, &modules, &resolver, &mut seen)
            .map_err(|e| format!("{at}{e}"))?;
        schedule.extend(scheduled.into_iter().map(Arc::new));
        expansions.extend(expansion.map(Arc::new));
    }
    let mut domain_names = HashSet::new();
    for (i, domain) in raw.domains.into_iter().enumerate() {
        let expansion = validate_domain(domain, interval, &modules, &mut seen, &mut domain_names)
            .map_err(|e| format!("domains[{i}]{e}"))?;
        expansions.push(Arc::new(expansion));
    }
    let history = validate_history(raw.history).map_err(|e| format!("history.{e}"))?;
    let mut probe_endpoint = validate_probe_endpoint(raw.probe_endpoint)?;
    probe_endpoint.places = super::Places::of(&schedule);
    let probe_endpoint_can_probe = probe_endpoint.enabled
        && !modules.is_empty()
        && (probe_endpoint.allow_any_target || !probe_endpoint.allowed_hosts.is_empty());
    if schedule.is_empty() && expansions.is_empty() && !probe_endpoint_can_probe {
        return Err("nothing to probe: list servers under targets or mail domains under domains (see config/example.yml), or modules and probe_endpoint.allowed_hosts for /probe".into());
    }
    let warnings = warnings(&schedule, &expansions);
    Ok(Config {
        max_concurrency,
        modules,
        schedule,
        expansions,
        dns,
        resolver,
        probe_endpoint,
        warnings,
        text: Arc::from(""),
        history,
    })
}

/// The most results or failures `history:` may keep per spec.
const MAX_HISTORY: usize = 1000;

/// `history: { results, failures }`: each within 0 to 1,000.
fn validate_history(raw: super::raw::RawHistory) -> Result<crate::config::HistoryBounds, String> {
    let defaults = crate::config::HistoryBounds::default();
    let results = raw.results.unwrap_or(defaults.results);
    let failures = raw.failures.unwrap_or(defaults.failures);
    for (name, n) in [("results", results), ("failures", failures)] {
        if n > MAX_HISTORY {
            return Err(format!("{name}: {n} is out of range (0 to {MAX_HISTORY})"));
        }
    }
    Ok(crate::config::HistoryBounds { results, failures })
}

/// The range of `dns.timeout`.
const DNS_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));
/// The range of `dns.min_ttl` and `dns.max_ttl`.
const DNS_TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));

fn validate_dns(raw: RawDns, base_dir: &Path) -> Result<DnsSettings, String> {
    let defaults = DnsSettings::default();
    let mut nameservers = Vec::with_capacity(raw.nameservers.len());
    for text in &raw.nameservers {
        let addr = text
            .parse::<std::net::SocketAddr>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
            .map_err(|_| {
                format!("nameservers: {text:?} is not an IP address or ADDRESS:PORT ([v6]:PORT for IPv6); a name server is given by address")
            })?;
        nameservers.push(addr);
    }
    let timeout = duration_in(raw.timeout.as_deref(), defaults.timeout, DNS_TIMEOUT_RANGE)
        .map_err(|e| format!("timeout: {e}"))?;
    let attempts = raw.attempts.unwrap_or(defaults.attempts);
    if !(1..=5).contains(&attempts) {
        return Err(format!("attempts: {attempts} is out of range (1 to 5)"));
    }
    let min_ttl = duration_in(raw.min_ttl.as_deref(), defaults.min_ttl, DNS_TTL_RANGE)
        .map_err(|e| format!("min_ttl: {e}"))?;
    let max_ttl = duration_in(raw.max_ttl.as_deref(), defaults.max_ttl, DNS_TTL_RANGE)
        .map_err(|e| format!("max_ttl: {e}"))?;
    if min_ttl > max_ttl {
        return Err(format!(
            "min_ttl: {} exceeds max_ttl {}",
            format_duration(min_ttl),
            format_duration(max_ttl)
        ));
    }
    Ok(DnsSettings {
        nameservers,
        timeout,
        attempts,
        min_ttl,
        max_ttl,
        hosts_file: raw.hosts_file.unwrap_or(defaults.hosts_file),
        cache_size: match raw.cache_size {
            Some(n) if n > 1_000_000 => {
                return Err(format!("cache_size: {n} is out of range (0 to 1000000)"))
            }
            Some(n) => n,
            None => defaults.cache_size,
        },
        trust_anchors: raw.trust_anchors.map(|p| resolve(base_dir, p)),
        dnssec: match raw.dnssec.as_deref() {
            Some(text) => crate::dns::DnssecMode::parse(text).map_err(|e| format!("dnssec: {e}"))?,
            None => defaults.dnssec,
        },
        refuse_addresses: match raw.refuse_addresses {
            Some(names) => names
                .iter()
                .map(|n| crate::dns::AddressClass::parse(n))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("refuse_addresses: {e}"))?,
            None => defaults.refuse_addresses,
        },
    })
}

/// The most domains one configuration may list.
const MAX_DOMAINS: usize = 100_000;

/// One mail domain: an expansion over its MX set. Errors start with the field below it.
fn validate_domain(
    domain: RawDomain,
    default_interval: Duration,
    modules: &BTreeMap<String, Arc<Module>>,
    seen: &mut HashSet<(String, u16, String)>,
    names: &mut HashSet<String>,
) -> Result<Expansion, String> {
    let name = domain.name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty()
        || ServerName::try_from(name.as_str()).is_err()
        || name.parse::<std::net::IpAddr>().is_ok()
    {
        return Err(format!(".name: {:?} is not a domain name", domain.name));
    }
    if names.len() >= MAX_DOMAINS {
        return Err(format!(": more than {MAX_DOMAINS} domains"));
    }
    if !names.insert(name.clone()) {
        return Err(format!(".name: domain {name:?} is listed twice"));
    }
    let interval = duration_in(domain.interval.as_deref(), default_interval, INTERVAL_RANGE)
        .map_err(|e| format!(".interval: {e}"))?;
    let ip_protocol = domain.ip_protocol.unwrap_or(IpProtocol::Both);
    if ip_protocol == IpProtocol::Auto {
        return Err(".ip_protocol: a domain walks every address; use both, ip4 or ip6".into());
    }
    let expect = Arc::new(match domain.expect {
        None => Expectations::default(),
        Some(e) => validate_expect(e).map_err(|e| format!(".expect.{e}"))?,
    });
    let ports = expanded_ports(&name, domain.ports, interval, modules, seen)?;
    let policy = validate_policy(domain.policy, &ports).map_err(|e| format!(".policy.{e}"))?;
    Ok(Expansion {
        name,
        kind: ExpansionKind::Domain,
        families: ip_protocol.families(),
        ports,
        interval,
        expect,
        policy,
    })
}

/// The default and the range of `policy.interval`: senders cache a policy for its max_age
/// (usually days), so an hourly check sees a change long before they act on it.
const POLICY_INTERVAL: (Duration, (Duration, Duration)) =
    (Duration::from_secs(3600), (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600)));

/// A domain's MTA-STS and TLS-RPT checks: on unless `enabled: false`. The HTTPS fetch
/// trusts what the domain's first module trusts (its `ca_file`), else the bundled roots.
fn validate_policy(raw: Option<RawPolicy>, ports: &[ExpandedPort]) -> Result<Option<PolicyCheck>, String> {
    let raw = raw.unwrap_or(RawPolicy {
        enabled: true,
        interval: None,
        timeout: None,
        https_port: None,
        dane: true,
    });
    if !raw.enabled {
        return Ok(None);
    }
    let interval = duration_in(raw.interval.as_deref(), POLICY_INTERVAL.0, POLICY_INTERVAL.1)
        .map_err(|e| format!("interval: {e}"))?;
    let timeout = duration_in(raw.timeout.as_deref(), DEFAULT_TIMEOUT, TIMEOUT_RANGE)
        .map_err(|e| format!("timeout: {e}"))?;
    let port = raw.https_port.unwrap_or(443);
    if port == 0 {
        return Err("https_port: must be between 1 and 65535".into());
    }
    let tls = match ports.iter().find_map(|p| p.module.transport.tls()) {
        Some(tls) => tls.settings.clone(),
        None => bundled_roots()?,
    };
    Ok(Some(PolicyCheck {
        interval,
        settings: crate::policy::PolicySettings { tls, port, timeout },
        dane: raw.dane,
    }))
}

/// The bundled WebPKI roots, built once.
fn bundled_roots() -> Result<Arc<TlsSettings>, String> {
    static BUNDLED: std::sync::OnceLock<Arc<TlsSettings>> = std::sync::OnceLock::new();
    if let Some(settings) = BUNDLED.get() {
        return Ok(settings.clone());
    }
    let settings =
        Arc::new(TlsSettings::new(&Roots::Bundled, true).map_err(|e| format!("bundled roots: {e}"))?);
    Ok(BUNDLED.get_or_init(|| settings).clone())
}

/// The ports of a domain or of a target's `both` modules, checked as a target's are.
fn expanded_ports(
    name: &str,
    ports: Vec<RawPort>,
    interval: Duration,
    modules: &BTreeMap<String, Arc<Module>>,
    seen: &mut HashSet<(String, u16, String)>,
) -> Result<Vec<ExpandedPort>, String> {
    if ports.is_empty() {
        return Err(".ports: must list at least one port".into());
    }
    let mut out = Vec::with_capacity(ports.len());
    for (j, port) in ports.into_iter().enumerate() {
        let at = format!(".ports[{j}]");
        let module = checked_port(&at, name, &port, interval, modules, seen)?;
        if module.delivery.is_some() {
            return Err(format!(
                "{at}.module: module {:?} delivers a message, which a domain's MX walk would do on every address; probe the MX as a target",
                port.module
            ));
        }
        out.push(ExpandedPort { port: port.port, module_name: port.module, module: module.clone() });
    }
    Ok(out)
}

/// A port entry's module, after the checks every port entry gets: a port number, a known
/// module, a timeout within the interval, and no (name, port, module) twice.
fn checked_port<'m>(
    at: &str,
    name: &str,
    port: &RawPort,
    interval: Duration,
    modules: &'m BTreeMap<String, Arc<Module>>,
    seen: &mut HashSet<(String, u16, String)>,
) -> Result<&'m Arc<Module>, String> {
    if port.port == 0 {
        return Err(format!("{at}.port: must be between 1 and 65535"));
    }
    let module = modules
        .get(&port.module)
        .ok_or_else(|| format!("{at}.module: {}", unknown_module(&port.module, modules)))?;
    // A delivery module runs on its own interval, checked against its timeout at load.
    if module.delivery.is_none() && module.timeout > interval {
        return Err(format!(
            "{at}: module {:?} timeout {} exceeds the probe interval {}",
            port.module,
            format_duration(module.timeout),
            format_duration(interval)
        ));
    }
    if !seen.insert((name.to_owned(), port.port, port.module.clone())) {
        return Err(format!(
            "{at}: {name:?} already probes port {} with module {:?}",
            port.port, port.module
        ));
    }
    Ok(module)
}

/// One target: its ports become scheduled specs, except those whose module probes every
/// address (`ip_protocol: both`), which become one expansion of the target's host. Errors
/// start with the field below the target (`.ports[1].module: ...`); `seen` catches a
/// (name, port, module) given twice.
fn validate_target(
    target: RawTarget,
    default_interval: Duration,
    modules: &BTreeMap<String, Arc<Module>>,
    resolver: &Arc<Resolver>,
    seen: &mut HashSet<(String, u16, String)>,
) -> Result<(Vec<Scheduled>, Option<Expansion>), String> {
    if target.host.trim().is_empty() {
        return Err(".host: must not be empty".into());
    }
    let name = target.name.unwrap_or_else(|| target.host.clone());
    if name.is_empty() {
        return Err(".name: must not be empty".into());
    }
    let interval = duration_in(target.interval.as_deref(), default_interval, INTERVAL_RANGE)
        .map_err(|e| format!(".interval: {e}"))?;
    if target.ports.is_empty() {
        return Err(".ports: must list at least one port".into());
    }
    let expect = Arc::new(match target.expect {
        None => Expectations::default(),
        Some(e) => validate_expect(e).map_err(|e| format!(".expect.{e}"))?,
    });
    let mut scheduled = Vec::with_capacity(target.ports.len());
    let mut every_address = Vec::new();
    for (j, port) in target.ports.into_iter().enumerate() {
        let at = format!(".ports[{j}]");
        let module = checked_port(&at, &name, &port, interval, modules, seen)?;
        if module.delivery.is_some() && module.ip_protocol == IpProtocol::Both {
            return Err(format!(
                "{at}.module: module {:?} delivers a message; ip_protocol: both would deliver one per address, so use auto, ip4 or ip6",
                port.module
            ));
        }
        if module.envelope.as_ref().is_some_and(Envelope::uses_domain) {
            return Err(format!(
                "{at}.module: module {:?} puts {} in its envelope, which only a domains: entry gives; write the address out for a target",
                port.module,
                Envelope::DOMAIN
            ));
        }
        // The name is checked now even when DNS decides the addresses later.
        let spec = module
            .spec(&name, &target.host, port.port, &port.module, expect.clone(), resolver)
            .map_err(|e| format!("{at}: {e}; set tls_config.server_name in module {:?}", port.module))?;
        if module.ip_protocol == IpProtocol::Both {
            every_address.push(ExpandedPort {
                port: port.port,
                module_name: port.module,
                module: module.clone(),
            });
        } else {
            let interval = module.delivery.as_ref().map_or(interval, |d| d.interval);
            scheduled.push(Scheduled { spec, interval });
        }
    }
    let expansion = (!every_address.is_empty()).then(|| Expansion {
        name,
        kind: ExpansionKind::Host(target.host.clone()),
        families: IpProtocol::Both.families(),
        ports: every_address,
        interval,
        expect,
        policy: None,
    });
    Ok((scheduled, expansion))
}

fn validate_expect(raw: RawExpect) -> Result<Expectations, String> {
    if raw.banner_hostname.as_deref() == Some("") {
        return Err("banner_hostname: must not be empty".into());
    }
    if let Some(bad) = raw.cert_names.iter().find(|n| ServerName::try_from(n.as_str()).is_err()) {
        return Err(format!("cert_names: {bad:?} is not a valid DNS name or IP address"));
    }
    Ok(Expectations {
        banner_hostname: raw.banner_hostname,
        starttls: raw.starttls,
        cert_names: raw.cert_names,
    })
}

fn validate_probe_endpoint(raw: RawProbeEndpoint) -> Result<ProbeEndpoint, String> {
    if let Some(bad) =
        raw.allowed_hosts.iter().find(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
    {
        return Err(format!("probe_endpoint.allowed_hosts: {bad:?} is not a host name or pattern"));
    }
    Ok(ProbeEndpoint {
        enabled: raw.enabled,
        allow_any_target: raw.allow_any_target,
        allowed_hosts: raw.allowed_hosts,
        places: Default::default(),
    })
}

/// What loads but will probably not do what was meant: a banner deadline on port 25 too
/// short for a postscreen MX. One warning per module.
fn warnings(schedule: &[Arc<Scheduled>], expansions: &[Arc<Expansion>]) -> Vec<String> {
    let mut warnings = Vec::new();
    let statics = schedule.iter().map(|s| (s.spec.port, s.spec.module_name.as_str(), &s.spec.module));
    let expanded =
        expansions.iter().flat_map(|e| e.ports.iter().map(|p| (p.port, p.module_name.as_str(), &p.module)));
    for (port, module_name, module) in statics.chain(expanded) {
        let banner_deadline = module.phase_timeout.min(module.timeout);
        if port != 25 || banner_deadline >= POSTSCREEN_GREET_MARGIN {
            continue;
        }
        let warning = format!(
            "modules.{}: a banner deadline of {} is shorter than the 6 s a Postfix postscreen MX waits before the last line of its greeting; such a server on port 25 will look silent (raise phase_timeout and timeout)",
            module_name,
            format_duration(banner_deadline)
        );
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }
    warnings
}

fn validate_module(raw: RawModule, base_dir: &Path) -> Result<Module, String> {
    // A delivery probe waits for the message to arrive: its deadline covers the whole path.
    let default_timeout = if raw.delivery.is_some() { DEFAULT_DELIVERY_TIMEOUT } else { DEFAULT_TIMEOUT };
    let timeout = duration_in(raw.timeout.as_deref(), default_timeout, TIMEOUT_RANGE)
        .map_err(|e| format!("timeout: {e}"))?;
    let phase_timeout = duration_in(raw.phase_timeout.as_deref(), timeout, TIMEOUT_RANGE)
        .map_err(|e| format!("phase_timeout: {e}"))?;
    if phase_timeout > timeout {
        return Err(format!(
            "phase_timeout: {} exceeds the module timeout {}",
            format_duration(phase_timeout),
            format_duration(timeout)
        ));
    }
    let ehlo_hostname = raw.ehlo_hostname.unwrap_or_else(|| DEFAULT_EHLO_HOSTNAME.to_owned());
    if ehlo_hostname.is_empty()
        || ehlo_hostname.len() > 255
        || ehlo_hostname.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("ehlo_hostname: {ehlo_hostname:?} is not a valid host name"));
    }
    let transport = validate_transport(raw.tls, raw.tls_config, base_dir)?;
    let auth = match raw.auth {
        None => None,
        Some(a) if raw.tls == TlsMode::None && !a.allow_plaintext => {
            return Err("auth: credentials would travel unencrypted with tls: none; use starttls_required or implicit, or set auth.allow_plaintext: true".into());
        }
        Some(a) => Some(validate_auth(a, base_dir).map_err(|e| format!("auth.{e}"))?),
    };
    let envelope = raw.envelope.map(validate_envelope).transpose().map_err(|e| format!("envelope.{e}"))?;
    let delivery = match raw.delivery {
        None => None,
        Some(_) if raw.tls == TlsMode::Starttls => {
            return Err("delivery: tls: starttls may send the message in plain text; use starttls_required or implicit (or none, to say so)".into());
        }
        Some(d) => Some(validate_delivery(d, timeout, base_dir).map_err(|e| format!("delivery.{e}"))?),
    };
    Ok(Module {
        phase_timeout,
        ehlo_hostname,
        ehlo_metrics: raw.ehlo_metrics,
        ip_protocol: raw.ip_protocol,
        auth,
        envelope,
        delivery,
        ..Module::new(transport, timeout)
    })
}

/// A delivery module's default deadline for the whole path (submit, delivery, fetch,
/// cleanup).
const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// `delivery.interval`: every probe writes a message into a mailbox, so not more often
/// than every 10 s; 5 minutes by default.
const DELIVERY_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(24 * 3600));
const DEFAULT_DELIVERY_INTERVAL: Duration = Duration::from_secs(300);
/// `delivery.poll_interval`: how often the mailbox is searched while waiting.
const POLL_INTERVAL_RANGE: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(60));
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_SWEEP_AFTER: Duration = Duration::from_secs(3600);

/// `delivery:`: addresses, pacing (the module's `timeout` must fit in `interval`, and a
/// message is swept only once no probe can still be waiting for it) and the IMAP side.
fn validate_delivery(raw: RawDelivery, timeout: Duration, base_dir: &Path) -> Result<Delivery, String> {
    check_address(&raw.mail_from).map_err(|e| format!("mail_from: {e}"))?;
    check_address(&raw.rcpt_to).map_err(|e| format!("rcpt_to: {e}"))?;
    let interval = duration_in(raw.interval.as_deref(), DEFAULT_DELIVERY_INTERVAL, DELIVERY_INTERVAL_RANGE)
        .map_err(|e| format!("interval: {e}"))?;
    if timeout > interval {
        return Err(format!(
            "interval: {} is shorter than the module timeout {}",
            format_duration(interval),
            format_duration(timeout)
        ));
    }
    let poll_interval = duration_in(raw.poll_interval.as_deref(), DEFAULT_POLL_INTERVAL, POLL_INTERVAL_RANGE)
        .map_err(|e| format!("poll_interval: {e}"))?;
    let sweep_after = duration_in(raw.sweep_after.as_deref(), DEFAULT_SWEEP_AFTER, (timeout, Duration::from_secs(30 * 24 * 3600)))
        .map_err(|e| format!("sweep_after: {e} (at least the module timeout, so that no probe still waiting loses its message)"))?;
    let imap = validate_imap(raw.imap, base_dir).map_err(|e| format!("imap.{e}"))?;
    Ok(Delivery {
        mail_from: raw.mail_from,
        rcpt_to: raw.rcpt_to,
        require_inbox: raw.require_inbox,
        interval,
        poll_interval,
        sweep_after,
        imap,
    })
}

/// `delivery.imap:`: where the mailbox is, TLS as for SMTP, and the mailbox's own login.
fn validate_imap(raw: RawImap, base_dir: &Path) -> Result<Imap, String> {
    if raw.host.as_deref().is_some_and(|h| h.trim().is_empty()) {
        return Err("host: must not be empty (leave it out to use the target's host)".into());
    }
    if raw.port == Some(0) {
        return Err("port: must be between 1 and 65535".into());
    }
    let (mode, default_port) = match raw.tls {
        ImapTlsMode::Implicit => (TlsMode::Implicit, 993),
        ImapTlsMode::Starttls => (TlsMode::StarttlsRequired, 143),
    };
    let transport = validate_transport(mode, raw.tls_config, base_dir)?;
    if raw.username.is_empty() {
        return Err("username: must not be empty".into());
    }
    let sources = [raw.password.is_some(), raw.password_file.is_some(), raw.password_env.is_some()];
    if !sources.contains(&true) {
        return Err("password: one of password, password_file or password_env is required".into());
    }
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err("password: password, password_file and password_env are mutually exclusive".into());
    }
    let password =
        read_password(raw.password, raw.password_file.map(|p| resolve(base_dir, p)), raw.password_env)?;
    if password.is_empty() {
        return Err("password: is empty".into());
    }
    if raw.junk_mailbox.as_deref().is_some_and(|j| j.is_empty() || j.chars().any(char::is_control)) {
        return Err("junk_mailbox: must be a mailbox name".into());
    }
    Ok(Imap {
        junk_mailbox: raw.junk_mailbox,
        ..Imap::new(
            raw.host,
            raw.port.unwrap_or(default_port),
            transport,
            raw.username,
            Secret::new(password),
        )
    })
}

/// The most recipients an envelope check sends: each is a label value of its own series.
const MAX_ENVELOPE_RECIPIENTS: usize = 10;

/// `envelope: { mail_from, accept, reject }`: at least one recipient, ten at most, each a
/// plain address (`{domain}` allowed) that fits in a command line.
fn validate_envelope(raw: RawEnvelope) -> Result<Envelope, String> {
    if !raw.mail_from.is_empty() {
        check_address(&raw.mail_from).map_err(|e| format!("mail_from: {e}"))?;
    }
    let mut recipients = Vec::with_capacity(raw.accept.len() + raw.reject.len());
    for (field, list, expect) in
        [("accept", raw.accept, EnvelopeExpect::Accept), ("reject", raw.reject, EnvelopeExpect::Reject)]
    {
        for (i, address) in list.into_iter().enumerate() {
            check_address(&address).map_err(|e| format!("{field}[{i}]: {e}"))?;
            if recipients.iter().any(|r: &EnvelopeRecipient| r.address == address) {
                return Err(format!("{field}[{i}]: {address:?} is listed twice"));
            }
            recipients.push(EnvelopeRecipient { address, expect });
        }
    }
    if recipients.is_empty() {
        return Err("accept: list at least one recipient under accept or reject".into());
    }
    if recipients.len() > MAX_ENVELOPE_RECIPIENTS {
        return Err(format!(
            "reject: {} recipients; at most {MAX_ENVELOPE_RECIPIENTS} (each is a label value)",
            recipients.len()
        ));
    }
    Ok(Envelope { mail_from: raw.mail_from, recipients })
}

/// A mailbox as MAIL FROM and RCPT TO carry it: `local@domain`, printable, no spaces or
/// angle brackets, at most 254 characters (RFC 5321's path limit less the brackets).
/// `check --deliver` holds its flags to the same rule.
pub fn check_address(address: &str) -> Result<(), String> {
    let bad = address.is_empty()
        || address.len() > 254
        || address.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        || !address.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if bad {
        return Err(format!("{address:?} is not an address (local@domain, printable, no spaces or <>)"));
    }
    Ok(())
}

/// The module's transport: its TLS mode, with trust settings built from `tls_config`
/// (the CA file or system store is read here) for the modes that use TLS.
fn validate_transport(mode: TlsMode, raw: RawTlsConfig, base_dir: &Path) -> Result<Transport, String> {
    if raw.ca_file.is_some() && raw.system_roots {
        return Err("tls_config: ca_file and system_roots are mutually exclusive".into());
    }
    if raw.insecure_skip_verify && raw.on_invalid_cert == Some(CertPolicy::Fail) {
        return Err(
            "tls_config: insecure_skip_verify and on_invalid_cert: fail are mutually exclusive".into()
        );
    }
    if mode == TlsMode::None {
        let any_set = raw.ca_file.is_some()
            || raw.server_name.is_some()
            || raw.insecure_skip_verify
            || raw.system_roots
            || raw.on_invalid_cert.is_some();
        return if any_set { Err("tls_config: set, but tls is none".into()) } else { Ok(Transport::Plain) };
    }
    let roots = match (raw.ca_file, raw.system_roots) {
        (Some(path), _) => Roots::CaFile(resolve(base_dir, path)),
        (None, true) => Roots::System,
        (None, false) => Roots::Bundled,
    };
    // Opportunistic STARTTLS (MTA to MTA, port 25) rarely has a valid certificate:
    // report it by default; where TLS is the point (465, 587), fail.
    let fail = match (raw.insecure_skip_verify, raw.on_invalid_cert) {
        (true, _) => false,
        (false, Some(policy)) => policy == CertPolicy::Fail,
        (false, None) => mode != TlsMode::Starttls,
    };
    let field = if matches!(roots, Roots::System) { "system_roots:" } else { "ca_file" };
    let settings = Arc::new(TlsSettings::new(&roots, fail).map_err(|e| format!("tls_config.{field} {e}"))?);
    Ok(Transport::of_mode(mode, || Tls { settings, name: raw.server_name }))
}

fn validate_auth(raw: RawAuth, base_dir: &Path) -> Result<Auth, String> {
    if raw.username.is_empty() {
        return Err("username: must not be empty".into());
    }
    let password_sources = [raw.password.is_some(), raw.password_file.is_some(), raw.password_env.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if let Some(path) = raw.token_file.map(|p| resolve(base_dir, p)) {
        if password_sources > 0 {
            return Err(
                "token_file: token_file and password, password_file or password_env are mutually exclusive"
                    .into(),
            );
        }
        if raw.mechanism.is_some_and(|m| m != AuthMechanism::Xoauth2) {
            return Err("mechanism: token_file goes with mechanism xoauth2".into());
        }
        std::fs::metadata(&path).map_err(|e| format!("token_file: {}: {e}", path.display()))?;
        return Ok(Auth {
            credentials: Credentials { username: raw.username, secret: CredentialSource::TokenFile(path) },
            mechanism: Some(AuthMechanism::Xoauth2),
            allow_plaintext: raw.allow_plaintext,
            allow_unverified_tls: raw.allow_unverified_tls,
        });
    }
    if raw.mechanism == Some(AuthMechanism::Xoauth2) {
        return Err("token_file: mechanism xoauth2 needs a token_file".into());
    }
    if password_sources > 1 {
        return Err("password: password, password_file and password_env are mutually exclusive".into());
    }
    let password =
        read_password(raw.password, raw.password_file.map(|p| resolve(base_dir, p)), raw.password_env)?;
    if password.is_empty() {
        return Err("password: is empty".into());
    }
    Ok(Auth {
        mechanism: raw.mechanism,
        allow_plaintext: raw.allow_plaintext,
        allow_unverified_tls: raw.allow_unverified_tls,
        ..Auth::with_password(raw.username, Secret::new(password))
    })
}

/// The password from whichever source the module names; errors say what to do.
fn read_password(
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<String, String> {
    match (inline, file, env) {
        (Some(p), _, _) => Ok(p),
        (_, Some(path), _) => crate::files::read_secret(&path).map_err(|e| {
            let hint = match e.io_kind() {
                Some(std::io::ErrorKind::NotFound) => "; write the account's password there (one line, mode 0600)",
                Some(std::io::ErrorKind::PermissionDenied) => "; let the exporter's user read it",
                _ => "",
            };
            format!("password_file: {}: {e}{hint}", path.display())
        }),
        (_, _, Some(var)) => std::env::var(&var).map_err(|e| match e {
            std::env::VarError::NotPresent => format!(
                "password_env: environment variable {var} is not set; set it to the account's password in the exporter's environment, or use password_file"
            ),
            std::env::VarError::NotUnicode(_) => format!("password_env: environment variable {var} is not valid UTF-8"),
        }),
        (None, None, None) => {
            Err("password: one of password, password_file, password_env or token_file is required".into())
        }
    }
}

/// A path from the configuration, taken from `base_dir` when it is relative.
fn resolve(base_dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}
