//! Configuration: YAML in, a validated and immutable `Config` out.
//!
//! First stop of the data flow. `load(path)` reads the file and calls `parse_in(text,
//! origin, base_dir)`: `raw` deserializes exactly what the YAML says (unknown keys
//! rejected, enum values in any case), `validate` fills defaults and checks every
//! invariant with a one-line error naming the field path, reading the credentials and
//! building each module's TLS settings once (`tls`), and `model` holds what comes out. The
//! scheduler receives the result in an `Arc` and a reload swaps it whole.

mod bounds;
mod model;
mod raw;
mod validate;

pub use bounds::MAX_CONFIG_BYTES;
pub use validate::check_address;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use model::{
    Auth, AuthMechanism, CredentialSource, Credentials, Delivery, EhloMetrics, Envelope, EnvelopeExpect,
    EnvelopeRecipient, ExpandedPort, Expansion, ExpansionKind, Expectations, HistoryBounds, Imap, IpProtocol,
    Module, NameError, PolicyCheck, ProbeSpec, Scheduled, Secret, Shard, SpecKey, Tls, TlsMode, Transport,
    Via,
};

/// The configuration used when no `--config.file` is given: the local host on the four
/// SMTP ports, so that a first run shows real metrics.
pub const EMBEDDED_DEFAULT: &str = r#"
modules:
  relay:
    tls: starttls
  submissions:
    tls: implicit
  submission:
    tls: starttls_required
targets:
  - name: localhost
    host: localhost
    ports:
      - { port: 25, module: relay }
      - { port: 465, module: submissions }
      - { port: 587, module: submission }
      - { port: 2525, module: submission }
"#;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// The name sent with EHLO unless a module sets `ehlo_hostname`.
pub const DEFAULT_EHLO_HOSTNAME: &str = "smtp-exporter.invalid";

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub max_concurrency: usize,
    pub modules: BTreeMap<String, Arc<Module>>,
    /// Every spec with its interval, in the order the file lists them.
    /// Shared with the scheduler's tasks, which hold the spec they run.
    pub schedule: Vec<Arc<Scheduled>>,
    /// The sources whose specs DNS decides (domains, and hosts probed on every address);
    /// `domains` walks them and hands the specs to the scheduler beside `schedule`.
    pub expansions: Vec<Arc<Expansion>>,
    /// The `dns:` section, and the resolver built from it for this configuration.
    pub dns: crate::dns::DnsSettings,
    pub resolver: Arc<crate::dns::Resolver>,
    pub probe_endpoint: ProbeEndpoint,
    /// Settings that load but will probably not do what was meant, in words; logged at
    /// load and printed by `--config.check`.
    pub warnings: Vec<String>,
    /// The text loaded, for `/config` to show with its secrets replaced ([`Config::shown`]).
    /// Kept as it is and redacted on request: parsing it into a YAML tree at every load
    /// held about 2 KiB per spec of freed heap in the process (10,000 specs: +20 MiB RSS).
    pub text: Arc<str>,
    /// How many recent results each spec keeps (`history:`).
    pub history: HistoryBounds,
}

/// Who `/probe` may probe. An open prober lets anyone who reaches the exporter make it
/// connect anywhere (a port scanner inside your network), so by default only hosts that
/// the configuration already names are allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeEndpoint {
    pub enabled: bool,
    pub allow_any_target: bool,
    /// Hosts allowed besides the configured targets' hosts; `*.example.com` allows every
    /// name below example.com.
    pub allowed_hosts: Vec<String>,
    /// The configured targets' hosts, and where their modules carry credentials; kept
    /// whole on every shard.
    pub places: Places,
}

/// Where the configuration probes, for `/probe` to look up in constant time: every
/// configured host (allowed on every shard), and every (host, port, module) whose module
/// carries credentials, the only places `/probe` may use such a module, so that a
/// listener on another port of an allowed host cannot collect them.
///
/// Held as 64-bit digests under a key drawn at random when the process starts, not as
/// text: 10,000 specs take a few hundred KiB instead of several MiB, and a request
/// matches a place it is not with a chance of one in 2^64 per configured place, which
/// nobody can aim for without the key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Places {
    hosts: std::collections::HashSet<u64>,
    credentialed: std::collections::HashSet<u64>,
}

impl Places {
    fn digest(value: impl std::hash::Hash) -> u64 {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
        KEY.get_or_init(Default::default).hash_one(value)
    }

    /// The places of `schedule` (hosts compared without regard to case).
    pub(crate) fn of(schedule: &[Arc<Scheduled>]) -> Places {
        let mut places = Places::default();
        for spec in schedule.iter().map(|s| &s.spec) {
            let host = spec.host.to_ascii_lowercase();
            if spec.module.auth.is_some() {
                places.credentialed.insert(Places::digest((&host, spec.port, &spec.module_name)));
            }
            places.hosts.insert(Places::digest(host));
        }
        places
    }

    fn has_host(&self, host: &str) -> bool {
        self.hosts.contains(&Places::digest(host.to_ascii_lowercase()))
    }

    fn credentialed(&self, host: &str, port: u16, module: &str) -> bool {
        self.credentialed.contains(&Places::digest((&host.to_ascii_lowercase(), port, module)))
    }
}

impl Config {
    /// Keeps only the specs this shard owns. `/probe` is not affected: the configured
    /// hosts stay allowed on every shard.
    pub fn keep_shard(&mut self, shard: Shard) {
        self.schedule.retain(|s| shard.owns(&s.spec.key()));
        self.expansions.retain(|e| shard.owns_expansion(&e.name));
    }

    /// Whether `/probe` may probe `host`.
    pub fn probe_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let endpoint = &self.probe_endpoint;
        endpoint.allow_any_target
            || endpoint.places.has_host(&host)
            || endpoint.allowed_hosts.iter().any(|pattern| {
                let pattern = pattern.to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => pattern == host,
                }
            })
    }

    /// A spec for one on-demand probe of `host:port` with module `module_name`, its
    /// deadline shortened to `timeout` when that is sooner than the module's.
    pub fn on_demand_spec(
        &self,
        host: &str,
        port: u16,
        module_name: &str,
        timeout: Option<Duration>,
    ) -> Result<ProbeSpec, OnDemandError> {
        let module = self
            .modules
            .get(module_name)
            .ok_or_else(|| OnDemandError::UnknownModule(unknown_module(module_name, &self.modules)))?;
        if port == 0 {
            return Err(OnDemandError::Port);
        }
        if module.auth.is_some() && !self.probe_endpoint.places.credentialed(host, port, module_name) {
            return Err(OnDemandError::Credentials);
        }
        if module.envelope.as_ref().is_some_and(Envelope::uses_domain) {
            return Err(OnDemandError::EnvelopeDomain);
        }
        if module.delivery.is_some() {
            return Err(OnDemandError::Delivery);
        }
        let module = match timeout {
            Some(t) if t < module.timeout => {
                let mut shorter = Module::clone(module);
                shorter.timeout = t;
                shorter.phase_timeout = shorter.phase_timeout.min(t);
                Arc::new(shorter)
            }
            _ => module.clone(),
        };
        module
            .spec(host, host, port, module_name, Arc::new(Expectations::default()), &self.resolver)
            .map_err(OnDemandError::Name)
    }
}

/// Why an on-demand probe cannot be made as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnDemandError {
    /// The module is not defined; the message lists those that are.
    UnknownModule(String),
    Port,
    Name(NameError),
    /// The module carries credentials, and the configuration does not probe this host and
    /// port with it.
    Credentials,
    /// The module's envelope names `{domain}`, which only a `domains:` entry gives.
    EnvelopeDomain,
    /// The module delivers a message: only the schedule runs it, at its own pace.
    Delivery,
}

impl fmt::Display for OnDemandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnDemandError::UnknownModule(message) => f.write_str(message),
            OnDemandError::Port => f.write_str("port must be between 1 and 65535"),
            OnDemandError::Name(e) => e.fmt(f),
            OnDemandError::Credentials => f.write_str(
                "the module carries credentials: /probe uses it only for a host and port that the configuration probes with it",
            ),
            OnDemandError::EnvelopeDomain => write!(
                f,
                "the module's envelope names {}, which only a domains: entry gives; /probe cannot fill it in",
                Envelope::DOMAIN
            ),
            OnDemandError::Delivery => f.write_str(
                "the module delivers a message into a mailbox; only the schedule runs it, at its delivery.interval",
            ),
        }
    }
}

impl std::error::Error for OnDemandError {}

/// The error for a module name that is not defined, listing those that are.
fn unknown_module(name: &str, modules: &BTreeMap<String, Arc<Module>>) -> String {
    let known: Vec<&str> = modules.keys().map(String::as_str).collect();
    let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
    format!("unknown module {name:?} (defined: {known})")
}

/// A configuration error, with where it came from.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, or `<embedded default>`.
    pub origin: String,
    /// The message, with field path and position where known.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the configuration file at `path`. Relative paths inside it
/// (`password_file`, `token_file`, `ca_file`) are taken from the file's own directory, as
/// Prometheus does.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let err = |message: String| ConfigError { origin: origin.clone(), message };
    let bytes = crate::files::read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_in(&text, &origin, base_dir)
}

/// The embedded default configuration.
pub fn embedded_default() -> Config {
    parse(EMBEDDED_DEFAULT, "<embedded default>").expect("the embedded default config is valid")
}

/// Parses and validates configuration text; `origin` names it in errors. Relative paths
/// in it are taken from the working directory.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_in(text, origin, Path::new(""))
}

/// Parses and validates configuration text whose relative paths are taken from `base_dir`.
pub fn parse_in(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let err = |message: String| ConfigError { origin: origin.to_owned(), message };
    bounds::check_text(text).map_err(err)?;
    let raw: raw::RawConfig = yaml_serde::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut config = validate::validate(raw, base_dir).map_err(err)?;
    config.text = Arc::from(text);
    Ok(config)
}

/// The keys whose values are secrets. Unknown keys are refused at load, so these are the
/// only places a secret can be written in a configuration file (`password_file`,
/// `password_env` and `token_file` name where a secret is, and are shown).
const SECRET_KEYS: [&str; 1] = ["password"];

impl Config {
    /// What `/config` shows: the file as loaded (aliases resolved), with the value of
    /// every secret key replaced, at any depth.
    pub fn shown(&self) -> String {
        shown(&self.text)
    }
}

fn shown(text: &str) -> String {
    fn redact(value: &mut yaml_serde::Value) {
        match value {
            yaml_serde::Value::Mapping(map) => {
                for (key, value) in map.iter_mut() {
                    if key.as_str().is_some_and(|k| SECRET_KEYS.contains(&k)) {
                        *value = yaml_serde::Value::String("<secret>".into());
                    } else {
                        redact(value);
                    }
                }
            }
            yaml_serde::Value::Sequence(items) => items.iter_mut().for_each(redact),
            yaml_serde::Value::Tagged(tagged) => redact(&mut tagged.value),
            _ => {}
        }
    }
    let Ok(mut value) = yaml_serde::from_str::<yaml_serde::Value>(text) else {
        return "# the configuration loaded, but cannot be shown\n".into();
    };
    redact(&mut value);
    yaml_serde::to_string(&value).unwrap_or_else(|_| "# the configuration cannot be shown\n".into())
}

/// Parses a Prometheus-style duration: one or more `<number><unit>` with units ms, s, m, h.
/// Our own, because the crates that parse durations (humantime) take another grammar
/// (`1.5s`, `2 days`, `1month`) than the one Prometheus users write.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (use e.g. 500ms, 10s, 1m30s)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("invalid duration {text:?}: must be greater than zero"));
    }
    Ok(total)
}

/// Parses a probe timeout (as `check --timeout` takes it): a duration within the range a
/// module's `timeout` accepts.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    validate::duration_in(Some(text), Duration::ZERO, validate::TIMEOUT_RANGE)
}

/// Formats a duration the way the config writes it.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests;
