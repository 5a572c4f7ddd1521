//! Configuration: YAML in, a validated and immutable `Config` out.
//!
//! First stop of the data flow. `load(path)` reads the file and calls `parse(text, origin)`,
//! which deserializes the raw serde types (unknown keys rejected), fills defaults, validates
//! every invariant with a one-line error naming the field path, reads credentials, and
//! builds each module's TLS client configuration once. The scheduler receives the result in
//! an `Arc` and a reload swaps it whole.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::{Deserialize, Deserializer};
use strum::VariantNames;

use crate::probe::tls::{Roots, TlsSettings};

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

// ---------------------------------------------------------------------------------------
// Raw form: exactly what the YAML says.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    max_concurrency: Option<usize>,
    #[serde(default)]
    modules: BTreeMap<String, RawModule>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    probe_endpoint: RawProbeEndpoint,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbeEndpoint {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    allow_any_target: bool,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

impl Default for RawProbeEndpoint {
    fn default() -> Self {
        RawProbeEndpoint { enabled: true, allow_any_target: false, allowed_hosts: Vec::new() }
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    tls: TlsMode,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    phase_timeout: Option<String>,
    #[serde(default)]
    ehlo_hostname: Option<String>,
    #[serde(default = "yes")]
    ehlo_metrics: bool,
    #[serde(default)]
    ip_protocol: IpProtocol,
    #[serde(default)]
    tls_config: RawTlsConfig,
    #[serde(default)]
    auth: Option<RawAuth>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTlsConfig {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    system_roots: bool,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    on_invalid_cert: Option<CertPolicy>,
}

/// Implements `Deserialize` for a config enum through its `FromStr` (strum: any case, and
/// the extra spellings a variant lists), with serde's own "unknown variant" error naming
/// the accepted values, so that the YAML parser still adds the line and column.
macro_rules! deserialize_by_name {
    ($($enum:ty),*) => {$(
        impl<'de> Deserialize<'de> for $enum {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // Parsed inside the visitor, so that an error carries the scalar's position.
                struct ByName;
                impl serde::de::Visitor<'_> for ByName {
                    type Value = $enum;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "one of {}", <$enum as VariantNames>::VARIANTS.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$enum, E> {
                        text.parse()
                            .map_err(|_| E::unknown_variant(text, <$enum as VariantNames>::VARIANTS))
                    }
                }
                deserializer.deserialize_str(ByName)
            }
        }
    )*};
}

deserialize_by_name!(TlsMode, IpProtocol, AuthMechanism, CertPolicy);

/// What an invalid certificate does to the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
enum CertPolicy {
    /// The probe fails with `tls_cert_invalid`.
    Fail,
    /// The verdict is exported, the probe goes on.
    Report,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    mechanism: Option<AuthMechanism>,
    #[serde(default)]
    allow_plaintext: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    name: Option<String>,
    host: String,
    #[serde(default)]
    interval: Option<String>,
    ports: Vec<RawPort>,
    #[serde(default)]
    expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    banner_hostname: Option<String>,
    #[serde(default)]
    starttls: Option<bool>,
    #[serde(default)]
    cert_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    port: u16,
    module: String,
}

// ---------------------------------------------------------------------------------------
// Validated form.

/// How a port speaks TLS. Set per port through its module, never guessed from the number.
/// Written in any case in the configuration (`STARTTLS` is `starttls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::VariantNames, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum TlsMode {
    /// Plain SMTP; STARTTLS is not attempted even when advertised.
    None,
    /// Opportunistic: STARTTLS when advertised, plain otherwise (port 25 style).
    Starttls,
    /// STARTTLS must be advertised and succeed (port 587 style).
    StarttlsRequired,
    /// TLS from the first byte (port 465 style, RFC 8314).
    Implicit,
}

impl TlsMode {
    /// The name the configuration and `check --port PORT:MODE` use.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Which address family to connect with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum IpProtocol {
    /// The first address the resolver returns.
    #[default]
    Auto,
    /// IPv4 only.
    Ip4,
    /// IPv6 only.
    Ip6,
}

/// A SASL mechanism the probe can run. The configuration takes the snake_case name or the
/// SASL name that EHLO, the metrics and `check` print (`CRAM-MD5`), in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum AuthMechanism {
    Plain,
    Login,
    #[strum(to_string = "cram_md5", serialize = "cram-md5")]
    CramMd5,
    /// OAuth 2.0 bearer token (Google, Microsoft 365); the token comes from `token_file`.
    Xoauth2,
}

impl AuthMechanism {
    /// The name as EHLO advertises it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
            AuthMechanism::CramMd5 => "CRAM-MD5",
            AuthMechanism::Xoauth2 => "XOAUTH2",
        }
    }
}

/// A password or token. It prints as `<redacted>` in every format, so that a stray
/// `{:?}` in a log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The clear text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Who to authenticate as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: CredentialSource,
}

/// Where the secret of a login comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// A password, read when the configuration is loaded.
    Password(Secret),
    /// A file holding an OAuth 2.0 access token, read on every probe so that rotation by
    /// another process takes effect without a reload.
    TokenFile(PathBuf),
}

/// AUTH settings of a module.
#[derive(Clone, Debug)]
pub struct Auth {
    pub credentials: Credentials,
    /// Forced mechanism; `None` picks from the EHLO list.
    pub mechanism: Option<AuthMechanism>,
    /// Allow sending credentials on an unencrypted session.
    pub allow_plaintext: bool,
}

/// A named, reusable probe recipe.
#[derive(Clone, Debug)]
pub struct Module {
    pub tls_mode: TlsMode,
    /// Deadline for the whole probe.
    pub timeout: Duration,
    /// Deadline for each phase (never beyond the probe's deadline).
    pub phase_timeout: Duration,
    pub ehlo_hostname: String,
    /// Export the per-extension and per-mechanism EHLO gauges (38 series per spec with
    /// STARTTLS); large fleets may turn them off.
    pub ehlo_metrics: bool,
    pub ip_protocol: IpProtocol,
    /// Trust settings, built once at load; `None` when `tls_mode` is `none`.
    pub tls: Option<Arc<TlsSettings>>,
    /// Overrides the name checked against the certificate (default: the target's host).
    pub server_name: Option<String>,
    pub auth: Option<Auth>,
}

impl Module {
    /// The name a probe of `host` checks the certificate against: the module's
    /// `server_name`, else the host. `None` when the module does no TLS.
    pub fn tls_server_name(&self, host: &str) -> Result<Option<ServerName<'static>>, String> {
        if self.tls_mode == TlsMode::None {
            return Ok(None);
        }
        let wanted = self.server_name.clone().unwrap_or_else(|| host.to_owned());
        ServerName::try_from(wanted.clone())
            .map(Some)
            .map_err(|_| format!("{wanted:?} is not a valid TLS server name"))
    }
}

/// What a target is expected to look like from outside; a mismatch hints at an
/// intercepting middlebox or at someone else answering on the port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// The first word of the greeting after 220 (compared without regard to case).
    pub banner_hostname: Option<String>,
    /// Whether STARTTLS must (true) or must not (false) be advertised before TLS.
    pub starttls: Option<bool>,
    /// Names the leaf certificate must be valid for.
    pub cert_names: Vec<String>,
}

impl Expectations {
    pub fn is_empty(&self) -> bool {
        self == &Expectations::default()
    }
}

/// One (target, port) to probe with one module: the unit the scheduler runs.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// The target's configured name: the `target` label.
    pub target: String,
    pub host: String,
    pub port: u16,
    /// The module's name: the `module` label.
    pub module_name: String,
    pub module: Arc<Module>,
    pub interval: Duration,
    /// The TLS server name, checked at load (`None` when the module does no TLS).
    pub server_name: Option<ServerName<'static>>,
    /// The target's expectations (shared by its ports).
    pub expect: Arc<Expectations>,
}

impl ProbeSpec {
    /// A stable identity: reloads keep the state of specs whose key did not change.
    pub fn key(&self) -> SpecKey {
        SpecKey { target: self.target.clone(), port: self.port, module: self.module_name.clone() }
    }
}

/// Identity of a probe spec: its label values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpecKey {
    pub target: String,
    pub port: u16,
    pub module: String,
}

impl SpecKey {
    /// FNV-1a (64 bit) over the labels, with separators so that ("ab", "c") and ("a", "bc")
    /// differ. Stable across restarts and Rust versions, unlike `DefaultHasher`, so the
    /// schedule and the shards do not move when the exporter restarts.
    pub fn stable_hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(self.target.as_bytes());
        eat(&[0xff]);
        eat(&self.port.to_be_bytes());
        eat(&[0xff]);
        eat(self.module.as_bytes());
        hash
    }
}

/// One of `count` replicas that split the configured specs between them with no
/// coordination (`--shard INDEX/COUNT`): each spec belongs to exactly one shard, by a
/// stable hash of its labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Parses `INDEX/COUNT`. INDEX may also be a StatefulSet pod name such as
    /// `smtp-exporter-2`: the number after its last `-` is used.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {text:?}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index = match index.rsplit_once('-') {
            Some((name, ordinal)) if !name.is_empty() => ordinal,
            Some(_) => return Err(bad()),
            None => index,
        };
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard probes `key`. The hash is mixed again (SplitMix64's finaliser)
    /// so that shard membership is independent of the schedule offset.
    pub fn owns(&self, key: &SpecKey) -> bool {
        let mut z = key.stable_hash();
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % self.count == self.index
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub max_concurrency: usize,
    pub modules: BTreeMap<String, Arc<Module>>,
    pub specs: Vec<ProbeSpec>,
    pub probe_endpoint: ProbeEndpoint,
    /// Settings that load but will probably not do what was meant, in words; logged at
    /// load and printed by `--config.check`.
    pub warnings: Vec<String>,
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
}

impl Config {
    /// Keeps only the specs this shard owns. `/probe` is not affected: the configured
    /// hosts stay allowed on every shard.
    pub fn keep_shard(&mut self, shard: Shard) {
        let hosts: Vec<String> = self.specs.iter().map(|s| s.host.clone()).collect();
        self.specs.retain(|s| shard.owns(&s.key()));
        self.probe_endpoint.allowed_hosts.extend(hosts);
    }

    /// Whether `/probe` may probe `host`.
    pub fn probe_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let endpoint = &self.probe_endpoint;
        endpoint.allow_any_target
            || self.specs.iter().any(|s| s.host.eq_ignore_ascii_case(&host))
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
    pub fn adhoc_spec(
        &self,
        host: &str,
        port: u16,
        module_name: &str,
        timeout: Option<Duration>,
    ) -> Result<ProbeSpec, String> {
        let module = self.modules.get(module_name).ok_or_else(|| {
            let known: Vec<&str> = self.modules.keys().map(String::as_str).collect();
            format!("unknown module {module_name:?} (defined: {})", known.join(", "))
        })?;
        if port == 0 {
            return Err("port must be between 1 and 65535".into());
        }
        let mut module = Module::clone(module);
        if let Some(t) = timeout {
            module.timeout = module.timeout.min(t);
            module.phase_timeout = module.phase_timeout.min(module.timeout);
        }
        let server_name = module.tls_server_name(host)?;
        Ok(ProbeSpec {
            target: host.to_owned(),
            host: host.to_owned(),
            port,
            module_name: module_name.to_owned(),
            module: Arc::new(module),
            interval: Duration::from_secs(3600),
            server_name,
            expect: Arc::new(Expectations::default()),
        })
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError { origin: origin.clone(), message: e.to_string() })?;
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
    let raw: RawConfig = yaml_serde::from_str(text).map_err(|e| err(e.to_string()))?;
    validate(raw, base_dir).map_err(err)
}

/// A path from the configuration, taken from `base_dir` when it is relative.
fn resolve(base_dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}

/// Below this, a banner deadline on port 25 cuts off an MX behind Postfix's postscreen,
/// which holds its greeting's last line for 6 s (`postscreen_greet_wait`).
const POSTSCREEN_GREET_MARGIN: Duration = Duration::from_secs(7);

fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, String> {
    let interval = match &raw.interval {
        Some(s) => parse_duration(s).map_err(|e| format!("interval: {e}"))?,
        None => DEFAULT_INTERVAL,
    };
    let max_concurrency = raw.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
    if max_concurrency == 0 {
        return Err("max_concurrency: must be at least 1".into());
    }

    let mut modules = BTreeMap::new();
    for (name, raw_module) in raw.modules {
        let module = validate_module(raw_module, base_dir).map_err(|e| format!("modules.{name}.{e}"))?;
        modules.insert(name, Arc::new(module));
    }
    let mut warnings = Vec::new();

    let mut specs = Vec::new();
    let mut seen = HashSet::new();
    for (i, target) in raw.targets.into_iter().enumerate() {
        let at = format!("targets[{i}]");
        if target.host.trim().is_empty() {
            return Err(format!("{at}.host: must not be empty"));
        }
        let name = target.name.unwrap_or_else(|| target.host.clone());
        if name.is_empty() {
            return Err(format!("{at}.name: must not be empty"));
        }
        let target_interval = match &target.interval {
            Some(s) => parse_duration(s).map_err(|e| format!("{at}.interval: {e}"))?,
            None => interval,
        };
        if target.ports.is_empty() {
            return Err(format!("{at}.ports: must list at least one port"));
        }
        let expect = Arc::new(match target.expect {
            None => Expectations::default(),
            Some(e) => {
                if e.banner_hostname.as_deref() == Some("") {
                    return Err(format!("{at}.expect.banner_hostname: must not be empty"));
                }
                if let Some(bad) = e.cert_names.iter().find(|n| ServerName::try_from(n.as_str()).is_err()) {
                    return Err(format!(
                        "{at}.expect.cert_names: {bad:?} is not a valid DNS name or IP address"
                    ));
                }
                Expectations {
                    banner_hostname: e.banner_hostname,
                    starttls: e.starttls,
                    cert_names: e.cert_names,
                }
            }
        });
        for (j, port) in target.ports.into_iter().enumerate() {
            let at = format!("{at}.ports[{j}]");
            if port.port == 0 {
                return Err(format!("{at}.port: must be between 1 and 65535"));
            }
            let Some(module) = modules.get(&port.module) else {
                let known: Vec<&str> = modules.keys().map(String::as_str).collect();
                return Err(format!(
                    "{at}.module: unknown module {:?} (defined: {})",
                    port.module,
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ));
            };
            if module.timeout > target_interval {
                return Err(format!(
                    "{at}: module {:?} timeout {} exceeds the probe interval {}",
                    port.module,
                    format_duration(module.timeout),
                    format_duration(target_interval)
                ));
            }
            let banner_deadline = module.phase_timeout.min(module.timeout);
            let warning = format!(
                "modules.{}: a banner deadline of {} is shorter than the 6 s a Postfix postscreen MX waits before the last line of its greeting; such a server on port 25 will look silent (raise phase_timeout and timeout)",
                port.module,
                format_duration(banner_deadline)
            );
            if port.port == 25 && banner_deadline < POSTSCREEN_GREET_MARGIN && !warnings.contains(&warning) {
                warnings.push(warning);
            }
            if !seen.insert((name.clone(), port.port, port.module.clone())) {
                return Err(format!(
                    "{at}: target {name:?} already probes port {} with module {:?}",
                    port.port, port.module
                ));
            }
            let server_name = module
                .tls_server_name(&target.host)
                .map_err(|e| format!("{at}: {e}; set tls_config.server_name in module {:?}", port.module))?;
            specs.push(ProbeSpec {
                target: name.clone(),
                host: target.host.clone(),
                port: port.port,
                module_name: port.module,
                module: module.clone(),
                interval: target_interval,
                server_name,
                expect: expect.clone(),
            });
        }
    }
    let endpoint = raw.probe_endpoint;
    if let Some(bad) =
        endpoint.allowed_hosts.iter().find(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
    {
        return Err(format!("probe_endpoint.allowed_hosts: {bad:?} is not a host name or pattern"));
    }
    let probe_endpoint = ProbeEndpoint {
        enabled: endpoint.enabled,
        allow_any_target: endpoint.allow_any_target,
        allowed_hosts: endpoint.allowed_hosts,
    };
    let probe_endpoint_can_probe = probe_endpoint.enabled
        && !modules.is_empty()
        && (probe_endpoint.allow_any_target || !probe_endpoint.allowed_hosts.is_empty());
    if specs.is_empty() && !probe_endpoint_can_probe {
        return Err("nothing to probe: list servers under targets (see config/example.yml), or modules and probe_endpoint.allowed_hosts for /probe".into());
    }
    Ok(Config { max_concurrency, modules, specs, probe_endpoint, warnings })
}

fn validate_module(raw: RawModule, base_dir: &Path) -> Result<Module, String> {
    let timeout = match &raw.timeout {
        Some(s) => parse_duration(s).map_err(|e| format!("timeout: {e}"))?,
        None => DEFAULT_TIMEOUT,
    };
    let phase_timeout = match &raw.phase_timeout {
        Some(s) => parse_duration(s).map_err(|e| format!("phase_timeout: {e}"))?,
        None => timeout,
    };
    if phase_timeout > timeout {
        return Err(format!(
            "phase_timeout: {} exceeds the module timeout {}",
            format_duration(phase_timeout),
            format_duration(timeout)
        ));
    }
    let ehlo_hostname = raw.ehlo_hostname.unwrap_or_else(|| DEFAULT_EHLO_HOSTNAME.to_owned());
    if ehlo_hostname.is_empty() || ehlo_hostname.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("ehlo_hostname: {ehlo_hostname:?} is not a valid host name"));
    }

    let tls_cfg = raw.tls_config;
    if tls_cfg.ca_file.is_some() && tls_cfg.system_roots {
        return Err("tls_config: ca_file and system_roots are mutually exclusive".into());
    }
    if tls_cfg.insecure_skip_verify && tls_cfg.on_invalid_cert == Some(CertPolicy::Fail) {
        return Err(
            "tls_config: insecure_skip_verify and on_invalid_cert: fail are mutually exclusive".into()
        );
    }
    let tls = match raw.tls {
        TlsMode::None => {
            if tls_cfg.ca_file.is_some()
                || tls_cfg.server_name.is_some()
                || tls_cfg.insecure_skip_verify
                || tls_cfg.system_roots
                || tls_cfg.on_invalid_cert.is_some()
            {
                return Err("tls_config: set, but tls is none".into());
            }
            None
        }
        mode => {
            let roots = match (&tls_cfg.ca_file, tls_cfg.system_roots) {
                (Some(path), _) => Roots::CaFile(resolve(base_dir, path.clone())),
                (None, true) => Roots::System,
                (None, false) => Roots::Bundled,
            };
            // Opportunistic STARTTLS (MTA to MTA, port 25) rarely has a valid certificate:
            // report it by default; where TLS is the point (465, 587), fail.
            let fail = match (tls_cfg.insecure_skip_verify, tls_cfg.on_invalid_cert) {
                (true, _) => false,
                (false, Some(policy)) => policy == CertPolicy::Fail,
                (false, None) => mode != TlsMode::Starttls,
            };
            let field = if matches!(roots, Roots::System) { "system_roots:" } else { "ca_file" };
            Some(Arc::new(TlsSettings::new(&roots, fail).map_err(|e| format!("tls_config.{field} {e}"))?))
        }
    };

    let auth = match raw.auth {
        None => None,
        Some(a) => {
            if raw.tls == TlsMode::None && !a.allow_plaintext {
                return Err("auth: credentials would travel unencrypted with tls: none; use starttls_required or implicit, or set auth.allow_plaintext: true".into());
            }
            Some(validate_auth(a, base_dir).map_err(|e| format!("auth.{e}"))?)
        }
    };

    Ok(Module {
        tls_mode: raw.tls,
        timeout,
        phase_timeout,
        ehlo_hostname,
        ehlo_metrics: raw.ehlo_metrics,
        ip_protocol: raw.ip_protocol,
        tls,
        server_name: tls_cfg.server_name,
        auth,
    })
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
        });
    }
    if raw.mechanism == Some(AuthMechanism::Xoauth2) {
        return Err("token_file: mechanism xoauth2 needs a token_file".into());
    }
    if password_sources > 1 {
        return Err("password: password, password_file and password_env are mutually exclusive".into());
    }
    let password = match (raw.password, raw.password_file.map(|p| resolve(base_dir, p)), raw.password_env) {
        (Some(p), _, _) => p,
        (_, Some(path), _) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound => "; write the account's password there (one line, mode 0600)",
                    std::io::ErrorKind::PermissionDenied => "; let the exporter's user read it",
                    _ => "",
                };
                format!("password_file: {}: {e}{hint}", path.display())
            })?;
            // A trailing newline from `echo secret > file` is not part of the password.
            text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned()
        }
        (_, _, Some(var)) => std::env::var(&var).map_err(|e| match e {
            std::env::VarError::NotPresent => format!(
                "password_env: environment variable {var} is not set; set it to the account's password in the exporter's environment, or use password_file"
            ),
            std::env::VarError::NotUnicode(_) => {
                format!("password_env: environment variable {var} is not valid UTF-8")
            }
        })?,
        (None, None, None) => {
            return Err(
                "password: one of password, password_file, password_env or token_file is required".into()
            )
        }
    };
    if password.is_empty() {
        return Err("password: is empty".into());
    }
    Ok(Auth {
        credentials: Credentials {
            username: raw.username,
            secret: CredentialSource::Password(Secret::new(password)),
        },
        mechanism: raw.mechanism,
        allow_plaintext: raw.allow_plaintext,
    })
}

/// Parses a Prometheus-style duration: one or more `<number><unit>` with units ms, s, m, h.
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

/// Formats a duration the way the config writes it.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(yaml: &str) -> String {
        parse(yaml, "test.yml").unwrap_err().to_string()
    }

    const MODULES: &str = "modules:\n  relay:\n    tls: starttls\n";
    /// A target for a module named `m`, so that a config has something to probe.
    const TARGET_M: &str = "targets:\n  - host: mx.example.test\n    ports: [{ port: 465, module: m }]\n";

    /// Issue 10 item 7: the spellings users write. Enum values in any case, and the SASL
    /// names the metrics and `check` print (CRAM-MD5) beside the snake_case ones.
    #[test]
    fn enum_values_take_any_case_and_sasl_names() {
        for (tls, want) in [
            ("STARTTLS", TlsMode::Starttls),
            ("Implicit", TlsMode::Implicit),
            ("starttls_REQUIRED", TlsMode::StarttlsRequired),
        ] {
            let yaml = format!("modules:\n  m:\n    tls: {tls}\n    ip_protocol: IP4\n    tls_config: {{ on_invalid_cert: Report }}\n{TARGET_M}");
            let config = parse(&yaml, "t").unwrap_or_else(|e| panic!("{tls}: {e}"));
            assert_eq!(config.modules["m"].tls_mode, want);
            assert_eq!(config.modules["m"].ip_protocol, IpProtocol::Ip4);
        }
        for (mechanism, want) in [
            ("CRAM-MD5", AuthMechanism::CramMd5),
            ("cram-md5", AuthMechanism::CramMd5),
            ("cram_md5", AuthMechanism::CramMd5),
            ("PLAIN", AuthMechanism::Plain),
            ("Login", AuthMechanism::Login),
        ] {
            let yaml = format!("modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, password: p, mechanism: {mechanism} }}\n{TARGET_M}");
            let config = parse(&yaml, "t").unwrap_or_else(|e| panic!("{mechanism}: {e}"));
            assert_eq!(config.modules["m"].auth.as_ref().unwrap().mechanism, Some(want));
        }
        assert_eq!(
            error_of("modules:\n  m:\n    tls: implicit\n    auth: { username: u, password: p, mechanism: DIGEST-MD5 }\n"),
            "test.yml: modules.m.auth.mechanism: unknown variant `DIGEST-MD5`, expected one of `plain`, `login`, `cram_md5`, `xoauth2` at line 4 column 50"
        );
    }

    /// Issue 10 item 6: relative paths in a config file are taken from the file's
    /// directory, as Prometheus does, and errors name the path that was tried.
    #[test]
    fn relative_paths_are_taken_from_the_config_files_directory() {
        let dir = std::env::temp_dir().join(format!("smtp-exporter-relative-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("secrets")).unwrap();
        std::fs::write(dir.join("secrets/pw"), "from-the-config-dir\n").unwrap();
        let file = dir.join("config.yml");
        std::fs::write(
            &file,
            format!("modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, password_file: secrets/pw }}\n{TARGET_M}"),
        )
        .unwrap();
        let config = load(&file).unwrap();
        let auth = config.modules["m"].auth.as_ref().unwrap();
        assert_eq!(auth.credentials.secret, CredentialSource::Password(Secret::new("from-the-config-dir")));

        std::fs::write(
            &file,
            format!("modules:\n  m:\n    tls: implicit\n    tls_config: {{ ca_file: ca.pem }}\n{TARGET_M}"),
        )
        .unwrap();
        let err = load(&file).unwrap_err().to_string();
        let want = format!("modules.m.tls_config.ca_file {}: No such file", dir.join("ca.pem").display());
        assert!(err.contains(&want), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 10 item 9: a file with nothing to probe is an error, not a silent empty
    /// exporter; modules with allowed hosts for /probe are something to probe.
    #[test]
    fn a_config_with_nothing_to_probe_is_rejected() {
        let nothing = "test.yml: nothing to probe: list servers under targets (see config/example.yml), or modules and probe_endpoint.allowed_hosts for /probe";
        for yaml in ["", "# only a comment\n", "modules:\n  m:\n    tls: implicit\n", "interval: 30s\n"] {
            assert_eq!(error_of(yaml), nothing, "for {yaml:?}");
        }
        let probe_only =
            "modules:\n  m:\n    tls: implicit\nprobe_endpoint: { allowed_hosts: [\"*.example.test\"] }\n";
        assert!(parse(probe_only, "t").is_ok());
        let disabled =
            "modules:\n  m:\n    tls: implicit\nprobe_endpoint: { enabled: false, allow_any_target: true }\n";
        assert_eq!(error_of(disabled), nothing);
    }

    /// Issue 10 item 4: a banner deadline that cuts off a postscreen MX on port 25 loads,
    /// with a warning that says why; the shipped example has none.
    #[test]
    fn a_short_banner_deadline_on_port_25_is_warned_about() {
        let yaml = "modules:\n  relay:\n    tls: starttls\n    phase_timeout: 5s\ntargets:\n  - host: mx\n    ports: [{ port: 25, module: relay }, { port: 2525, module: relay }]\n";
        let config = parse(yaml, "t").unwrap();
        assert_eq!(
            config.warnings,
            vec!["modules.relay: a banner deadline of 5s is shorter than the 6 s a Postfix postscreen MX waits before the last line of its greeting; such a server on port 25 will look silent (raise phase_timeout and timeout)"]
        );
        let example = parse(include_str!("../config/example.yml"), "config/example.yml").unwrap();
        assert!(example.warnings.is_empty(), "{:?}", example.warnings);
        assert!(embedded_default().warnings.is_empty());
    }

    #[test]
    fn embedded_default_covers_the_four_ports() {
        let config = embedded_default();
        let ports: Vec<u16> = config.specs.iter().map(|s| s.port).collect();
        assert_eq!(ports, vec![25, 465, 587, 2525]);
        assert_eq!(config.specs[1].module.tls_mode, TlsMode::Implicit);
    }

    /// Issue 10 item 9: the annotated example loads as it is, with no password file or
    /// environment variable set up beforehand.
    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/example.yml");
        let config = parse(text, "config/example.yml").unwrap();
        let ports: HashSet<u16> = config.specs.iter().map(|s| s.port).collect();
        for p in [25, 465, 587, 2525] {
            assert!(ports.contains(&p), "example lacks port {p}");
        }
    }

    /// The simulation the sharding design promises: 4 shards over 10,000 specs, each spec
    /// probed by exactly one shard, shard sizes within 5% of each other.
    #[test]
    fn four_shards_split_ten_thousand_specs_evenly() {
        let keys: Vec<SpecKey> = (0..2500)
            .flat_map(|i| {
                [25u16, 465, 587, 2525].map(|port| SpecKey {
                    target: format!("mx{i}.example.test"),
                    port,
                    module: if port == 465 { "submissions".into() } else { "relay".into() },
                })
            })
            .collect();
        let shards: Vec<Shard> = (0..4).map(|i| Shard::parse(&format!("{i}/4")).unwrap()).collect();
        let mut sizes = [0usize; 4];
        for key in &keys {
            let owners: Vec<usize> = (0..4).filter(|&i| shards[i].owns(key)).collect();
            assert_eq!(owners.len(), 1, "{key:?} owned by {owners:?}");
            sizes[owners[0]] += 1;
        }
        let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
        assert_eq!(sizes.iter().sum::<usize>(), 10_000);
        assert!((max - min) as f64 / max as f64 <= 0.05, "shard sizes {sizes:?}");
    }

    #[test]
    fn shard_arguments() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert_eq!(Shard::parse("smtp-exporter-3/4").unwrap(), Shard { index: 3, count: 4 });
        for bad in ["4/4", "1", "a/4", "1/0", "-1/4", "1/x"] {
            assert!(Shard::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["", "10", "s", "1x", "-1s", "0s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Table: config text → exact error (the blackbox_exporter habit).
    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                "targets: []\nbogus: 1\n",
                "test.yml: unknown field `bogus`, expected one of `interval`, `max_concurrency`, `modules`, `targets`, `probe_endpoint` at line 2 column 1",
            ),
            (
                &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 25, module: relay }}]\n    expect: {{ cert_names: [\"not a name\"] }}\n"),
                "test.yml: targets[0].expect.cert_names: \"not a name\" is not a valid DNS name or IP address",
            ),
            (
                &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 25, module: relay }}]\n    expect: {{ starttls: maybe }}\n"),
                "test.yml: targets[0].expect.starttls: invalid type: string \"maybe\", expected a boolean at line 7 column 25",
            ),
            (
                "modules:\n  relay:\n    tls: sometimes\n",
                "test.yml: modules.relay.tls: unknown variant `sometimes`, expected one of `none`, `starttls`, `starttls_required`, `implicit` at line 3 column 10",
            ),
            (
                &format!("{MODULES}targets:\n  - host: mx\n    ports:\n      - {{ port: 25, module: nope }}\n"),
                "test.yml: targets[0].ports[0].module: unknown module \"nope\" (defined: relay)",
            ),
            (
                &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 25, module: relay }}, {{ port: 25, module: relay }}]\n"),
                "test.yml: targets[0].ports[1]: target \"mx\" already probes port 25 with module \"relay\"",
            ),
            (
                &format!("{MODULES}targets:\n  - host: mx\n    ports: [{{ port: 0, module: relay }}]\n"),
                "test.yml: targets[0].ports[0].port: must be between 1 and 65535",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    timeout: 5s\n    phase_timeout: 6s\n",
                "test.yml: modules.m.phase_timeout: 6s exceeds the module timeout 5s",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    timeout: 90s\ntargets:\n  - host: mx\n    ports: [{ port: 465, module: m }]\n",
                "test.yml: targets[0].ports[0]: module \"m\" timeout 90s exceeds the probe interval 60s",
            ),
            (
                "modules:\n  m:\n    tls: none\n    auth: { username: u, password: p }\n",
                "test.yml: modules.m.auth: credentials would travel unencrypted with tls: none; use starttls_required or implicit, or set auth.allow_plaintext: true",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    auth: { username: u, password: p, password_env: X }\n",
                "test.yml: modules.m.auth.password: password, password_file and password_env are mutually exclusive",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    auth: { username: u, password_file: /nonexistent/pw }\n",
                "test.yml: modules.m.auth.password_file: /nonexistent/pw: No such file or directory (os error 2); write the account's password there (one line, mode 0600)",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    tls_config: { ca_file: /nonexistent/ca.pem }\n",
                "test.yml: modules.m.tls_config.ca_file /nonexistent/ca.pem: No such file or directory (os error 2)",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    tls_config: { insecure_skip_verify: true, on_invalid_cert: fail }\n",
                "test.yml: modules.m.tls_config: insecure_skip_verify and on_invalid_cert: fail are mutually exclusive",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    auth: { username: u, mechanism: xoauth2, password: p }\n",
                "test.yml: modules.m.auth.token_file: mechanism xoauth2 needs a token_file",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    auth: { username: u, token_file: /nonexistent/token }\n",
                "test.yml: modules.m.auth.token_file: /nonexistent/token: No such file or directory (os error 2)",
            ),
            (
                "modules:\n  m:\n    tls: implicit\n    auth: { username: u, token_file: /etc/hostname, password: p }\n",
                "test.yml: modules.m.auth.token_file: token_file and password, password_file or password_env are mutually exclusive",
            ),
            (
                "modules:\n  m:\n    tls: none\n    tls_config: { insecure_skip_verify: true }\n",
                "test.yml: modules.m.tls_config: set, but tls is none",
            ),
            (
                "interval: soon\n",
                "test.yml: interval: invalid duration \"soon\" (use e.g. 500ms, 10s, 1m30s)",
            ),
            (
                "max_concurrency: 0\n",
                "test.yml: max_concurrency: must be at least 1",
            ),
            (
                "modules:\n  m:\n    tls: implicit\ntargets:\n  - host: \"bad host!\"\n    ports: [{ port: 465, module: m }]\n",
                "test.yml: targets[0].ports[0]: \"bad host!\" is not a valid TLS server name; set tls_config.server_name in module \"m\"",
            ),
            (
                "targets:\n  - host: mx\n    ports:\n      - { port: 70000, module: relay }\n",
                "test.yml: targets[0].ports[0].port: invalid value: integer `70000`, expected u16 at line 4 column 17",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(&error_of(yaml), want, "for config:\n{yaml}");
        }
    }

    #[test]
    fn password_file_trailing_newline_is_dropped_and_secret_is_redacted() {
        let dir = std::env::temp_dir().join(format!("smtp-exporter-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret-value\n").unwrap();
        let yaml = format!(
            "modules:\n  m:\n    tls: implicit\n    auth: {{ username: u, password_file: {} }}\n{TARGET_M}",
            pw.display()
        );
        let config = parse(&yaml, "t").unwrap();
        let auth = config.modules["m"].auth.as_ref().unwrap();
        assert_eq!(auth.credentials.secret, CredentialSource::Password(Secret::new("s3cret-value")));
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "secret leaked in Debug: {debug}");
        assert!(debug.contains("<redacted>"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
