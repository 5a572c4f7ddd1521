//! The raw configuration: exactly what the YAML says, as serde reads it. A missing
//! `Option` field is `None` without saying so; other fields name their default.
//!
//! First step of `config::parse_in`: unknown keys are rejected, enum values are read by
//! name in any case (with their extra spellings), and nothing is checked beyond types.
//! `config::validate` turns this into the model.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use strum::VariantNames;

use super::model::{AuthMechanism, EhloMetrics, IpProtocol, TlsMode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) interval: Option<String>,
    pub(super) max_concurrency: Option<usize>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub(super) modules: BTreeMap<String, RawModule>,
    #[serde(default)]
    pub(super) targets: Vec<RawTarget>,
    #[serde(default)]
    pub(super) domains: Vec<RawDomain>,
    #[serde(default)]
    pub(super) dns: RawDns,
    #[serde(default)]
    pub(super) probe_endpoint: RawProbeEndpoint,
    #[serde(default)]
    pub(super) history: RawHistory,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHistory {
    pub(super) results: Option<usize>,
    pub(super) failures: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDns {
    pub(super) nameservers: Vec<String>,
    pub(super) timeout: Option<String>,
    pub(super) attempts: Option<usize>,
    pub(super) min_ttl: Option<String>,
    pub(super) max_ttl: Option<String>,
    pub(super) hosts_file: Option<bool>,
    pub(super) cache_size: Option<u64>,
    pub(super) trust_anchors: Option<std::path::PathBuf>,
    pub(super) dnssec: Option<String>,
    pub(super) refuse_addresses: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    pub(super) name: String,
    pub(super) interval: Option<String>,
    pub(super) ports: Vec<RawPort>,
    pub(super) ip_protocol: Option<IpProtocol>,
    pub(super) expect: Option<RawExpect>,
    pub(super) policy: Option<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) https_port: Option<u16>,
    #[serde(default = "yes")]
    pub(super) dane: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbeEndpoint {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) allow_any_target: bool,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<String>,
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
pub(super) struct RawModule {
    pub(super) tls: TlsMode,
    pub(super) timeout: Option<String>,
    pub(super) phase_timeout: Option<String>,
    pub(super) ehlo_hostname: Option<String>,
    #[serde(default)]
    pub(super) ehlo_metrics: EhloMetrics,
    #[serde(default)]
    pub(super) ip_protocol: IpProtocol,
    #[serde(default)]
    pub(super) tls_config: RawTlsConfig,
    pub(super) auth: Option<RawAuth>,
    pub(super) envelope: Option<RawEnvelope>,
    pub(super) delivery: Option<RawDelivery>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) mail_from: String,
    pub(super) rcpt_to: String,
    #[serde(default = "yes")]
    pub(super) require_inbox: bool,
    pub(super) interval: Option<String>,
    pub(super) poll_interval: Option<String>,
    pub(super) sweep_after: Option<String>,
    pub(super) imap: RawImap,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImap {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) tls: ImapTlsMode,
    #[serde(default)]
    pub(super) tls_config: RawTlsConfig,
    pub(super) username: String,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) junk_mailbox: Option<String>,
}

/// How the delivery probe's IMAP connection is encrypted: there is no plain mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub(super) enum ImapTlsMode {
    /// TLS from the first byte (port 993).
    Implicit,
    /// STARTTLS, required (port 143).
    Starttls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvelope {
    #[serde(default)]
    pub(super) mail_from: String,
    #[serde(default)]
    pub(super) accept: Vec<String>,
    #[serde(default)]
    pub(super) reject: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTlsConfig {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) system_roots: bool,
    pub(super) server_name: Option<String>,
    pub(super) insecure_skip_verify: bool,
    pub(super) on_invalid_cert: Option<CertPolicy>,
}

/// A map whose keys must be unique: YAML lets a key repeat and a plain map keeps the last,
/// which would silently drop a module defined twice.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map with unique names")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("{key:?} is defined twice")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Unique(std::marker::PhantomData))
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

deserialize_by_name!(TlsMode, IpProtocol, AuthMechanism, CertPolicy, ImapTlsMode);

/// `ehlo_metrics`: a name (`all`, `offered`, `none`), or `true` / `false` as it was first
/// written (all / none).
impl<'de> Deserialize<'de> for EhloMetrics {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameOrBool;
        impl serde::de::Visitor<'_> for NameOrBool {
            type Value = EhloMetrics;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {}, or true / false", EhloMetrics::VARIANTS.join(", "))
            }
            fn visit_bool<E: serde::de::Error>(self, all: bool) -> Result<EhloMetrics, E> {
                Ok(if all { EhloMetrics::All } else { EhloMetrics::None })
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<EhloMetrics, E> {
                text.parse().map_err(|_| E::unknown_variant(text, EhloMetrics::VARIANTS))
            }
        }
        deserializer.deserialize_any(NameOrBool)
    }
}

/// What an invalid certificate does to the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub(super) enum CertPolicy {
    /// The probe fails with `tls_cert_invalid`.
    Fail,
    /// The verdict is exported, the probe goes on.
    Report,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) username: String,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) mechanism: Option<AuthMechanism>,
    #[serde(default)]
    pub(super) allow_plaintext: bool,
    #[serde(default)]
    pub(super) allow_unverified_tls: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Option<String>,
    pub(super) host: String,
    pub(super) interval: Option<String>,
    pub(super) ports: Vec<RawPort>,
    pub(super) expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub(super) banner_hostname: Option<String>,
    pub(super) starttls: Option<bool>,
    #[serde(default)]
    pub(super) cert_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPort {
    pub(super) port: u16,
    pub(super) module: String,
}
