//! What `/probe` may do, decided from the configuration: which hosts it may probe
//! ([`ProbeEndpoint`], [`Places`]), and the spec it probes for a request
//! ([`Config::on_demand_spec`]), or why not ([`OnDemandError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, Envelope, Expectations, Module, NameError, ProbeSpec, Scheduled};

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
pub(super) fn unknown_module(name: &str, modules: &BTreeMap<String, Arc<Module>>) -> String {
    let known: Vec<&str> = modules.keys().map(String::as_str).collect();
    let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
    format!("unknown module {name:?} (defined: {known})")
}
