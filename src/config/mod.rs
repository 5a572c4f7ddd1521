//! Configuration: YAML in, a validated and immutable `Config` out.
//!
//! First stop of the data flow. `load(path)` reads the file and calls `parse_in(text,
//! origin, base_dir)`: `raw` deserializes exactly what the YAML says (unknown keys
//! rejected, enum values in any case), `validate` fills defaults and checks every
//! invariant with a one-line error naming the field path, reading the credentials and
//! building each module's TLS settings once (`tls`), and `model` holds what comes out. The
//! scheduler receives the result in an `Arc` and a reload swaps it whole.
//!
//! Beside them: `bounds` (what the YAML parser may be given), `durations` (`10s`,
//! `1m30s`), `on_demand` (what `/probe` may probe, and its spec for a request).

mod bounds;
mod durations;
mod model;
mod on_demand;
mod raw;
mod validate;

pub use bounds::MAX_CONFIG_BYTES;
pub use durations::{format_duration, parse_duration, parse_timeout};
pub use on_demand::{OnDemandError, Places, ProbeEndpoint};
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

impl Config {
    /// Keeps only the specs this shard owns. `/probe` is not affected: the configured
    /// hosts stay allowed on every shard.
    pub fn keep_shard(&mut self, shard: Shard) {
        self.schedule.retain(|s| shard.owns(&s.spec.key()));
        self.expansions.retain(|e| shard.owns_expansion(&e.name));
    }
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

#[cfg(test)]
mod tests;
