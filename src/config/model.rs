//! The validated configuration's parts: modules and their transport, credentials, probe
//! specs and their schedule, the identity of a spec, and shards.
//!
//! Built by `config::validate` from the raw YAML; read by the scheduler, the probe walk,
//! `/probe` and `check`. Plain data once built: nothing here does I/O.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::dns::{Family, Resolver};
use crate::tls::TlsSettings;

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

/// Which addresses of a host to probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum IpProtocol {
    /// One address: the host's first IPv4 address, else its first IPv6 address. One set of
    /// series per port, whatever the host's DNS holds.
    #[default]
    Auto,
    /// The first IPv4 address only.
    Ip4,
    /// The first IPv6 address only.
    Ip6,
    /// Every IPv4 and IPv6 address, each its own spec with `family` and `address` labels,
    /// following DNS as it changes (see `Expansion`).
    Both,
}

impl IpProtocol {
    /// The one family a single-address probe is limited to, if any.
    pub fn family(self) -> Option<Family> {
        match self {
            IpProtocol::Ip4 => Some(Family::Ip4),
            IpProtocol::Ip6 => Some(Family::Ip6),
            IpProtocol::Auto | IpProtocol::Both => None,
        }
    }

    /// The families an expanded source walks.
    pub fn families(self) -> &'static [Family] {
        match self {
            IpProtocol::Ip4 => &[Family::Ip4],
            IpProtocol::Ip6 => &[Family::Ip6],
            IpProtocol::Auto | IpProtocol::Both => &[Family::Ip4, Family::Ip6],
        }
    }
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
    /// Allow sending credentials over TLS whose certificate did not verify.
    pub allow_unverified_tls: bool,
}

impl Auth {
    /// A login with `password` as the configuration's defaults have it: the mechanism
    /// picked from what the server offers, never over a session without TLS or with TLS
    /// whose certificate did not verify.
    pub fn with_password(username: String, password: Secret) -> Auth {
        Auth {
            credentials: Credentials { username, secret: CredentialSource::Password(password) },
            mechanism: None,
            allow_plaintext: false,
            allow_unverified_tls: false,
        }
    }
}

/// How a module speaks TLS. The TLS variants carry the TLS settings, so a module without
/// TLS has none and one with TLS cannot lack them. `Name` is what the certificate is
/// checked against: a module holds the optional `server_name` override; a probe spec holds
/// the name resolved for its host.
#[derive(Clone, Debug)]
pub enum Transport<Name = Option<String>> {
    /// Plain SMTP; STARTTLS is not attempted even when advertised.
    Plain,
    /// STARTTLS: opportunistic (port 25, used when advertised) or `required` (port 587).
    Starttls { required: bool, tls: Tls<Name> },
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit { tls: Tls<Name> },
}

/// The TLS half of a transport: the trust settings built once at load, and the name.
#[derive(Clone, Debug)]
pub struct Tls<Name> {
    pub settings: Arc<TlsSettings>,
    pub name: Name,
}

impl<Name> Transport<Name> {
    /// The mode as the configuration names it.
    pub fn mode(&self) -> TlsMode {
        match self {
            Transport::Plain => TlsMode::None,
            Transport::Starttls { required: false, .. } => TlsMode::Starttls,
            Transport::Starttls { required: true, .. } => TlsMode::StarttlsRequired,
            Transport::Implicit { .. } => TlsMode::Implicit,
        }
    }

    /// The TLS settings and name, for the transports that have TLS.
    pub fn tls(&self) -> Option<&Tls<Name>> {
        match self {
            Transport::Plain => None,
            Transport::Starttls { tls, .. } | Transport::Implicit { tls } => Some(tls),
        }
    }

    /// Builds a transport of `mode`, with `tls` for the modes that use it.
    pub fn of_mode(mode: TlsMode, tls: impl FnOnce() -> Tls<Name>) -> Transport<Name> {
        match mode {
            TlsMode::None => Transport::Plain,
            TlsMode::Starttls => Transport::Starttls { required: false, tls: tls() },
            TlsMode::StarttlsRequired => Transport::Starttls { required: true, tls: tls() },
            TlsMode::Implicit => Transport::Implicit { tls: tls() },
        }
    }
}

impl Transport {
    /// The transport a probe of `host` uses: the certificate is checked against the
    /// module's `server_name`, else the host. Fails when that is not a valid TLS name.
    pub fn for_host(&self, host: &str) -> Result<Transport<ServerName<'static>>, NameError> {
        let resolve = |tls: &Tls<Option<String>>| {
            let wanted = tls.name.clone().unwrap_or_else(|| host.to_owned());
            ServerName::try_from(wanted.clone())
                .map(|name| Tls { settings: tls.settings.clone(), name })
                .map_err(|_| NameError { name: wanted })
        };
        Ok(match self {
            Transport::Plain => Transport::Plain,
            Transport::Starttls { required, tls } => {
                Transport::Starttls { required: *required, tls: resolve(tls)? }
            }
            Transport::Implicit { tls } => Transport::Implicit { tls: resolve(tls)? },
        })
    }
}

/// A name that a certificate cannot be checked against (not a DNS name or an IP address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    pub name: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a valid TLS server name", self.name)
    }
}

impl std::error::Error for NameError {}

/// A named, reusable probe recipe.
#[derive(Clone, Debug)]
pub struct Module {
    pub transport: Transport,
    /// Deadline for the whole probe.
    pub timeout: Duration,
    /// Deadline for each phase (never beyond the probe's deadline).
    pub phase_timeout: Duration,
    pub ehlo_hostname: String,
    /// Which per-extension and per-mechanism EHLO gauges the specs export.
    pub ehlo_metrics: EhloMetrics,
    pub ip_protocol: IpProtocol,
    pub auth: Option<Auth>,
    /// The envelope check after EHLO (and AUTH): MAIL FROM, RCPT TO each recipient, RSET.
    pub envelope: Option<Envelope>,
    /// End-to-end delivery: submit a message after AUTH, then read it back over IMAP.
    pub delivery: Option<Delivery>,
}

/// End-to-end delivery (`delivery:`): the probe submits a message carrying a unique token
/// and waits until the token shows in the destination mailbox, read over IMAP; then it
/// deletes the message. Specs of such a module run on `interval`, not the target's.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub mail_from: String,
    pub rcpt_to: String,
    /// Fail with `delivered_to_junk` when the message lands in the junk folder.
    pub require_inbox: bool,
    pub interval: Duration,
    /// How often the mailbox is searched while waiting (the inbox wakes earlier with IDLE).
    pub poll_interval: Duration,
    /// Probe messages older than this, left by an earlier probe that did not finish, are
    /// deleted by the next probe.
    pub sweep_after: Duration,
    pub imap: Imap,
}

/// Where and how the delivery probe reads the mailbox.
#[derive(Clone, Debug)]
pub struct Imap {
    /// The IMAP server; `None`: the target's host.
    pub host: Option<String>,
    pub port: u16,
    /// Implicit TLS (993) or STARTTLS (143), with the module's TLS rules; never plain,
    /// because LOGIN carries the password.
    pub transport: Transport,
    pub username: String,
    pub password: Secret,
    /// The junk folder's name; `None`: the folder marked `\Junk` (RFC 6154), if any.
    pub junk_mailbox: Option<String>,
}

impl Imap {
    /// The mailbox `username` at `host:port` (`None`: the target's host), with the
    /// configuration's defaults: the junk folder found by its `\Junk` mark.
    pub fn new(
        host: Option<String>,
        port: u16,
        transport: Transport,
        username: String,
        password: Secret,
    ) -> Imap {
        Imap { host, port, transport, username, password, junk_mailbox: None }
    }
}

/// What the envelope phase sends and what each recipient's reply must be. Never DATA: the
/// transaction ends with RSET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM's address; empty for the null sender `<>`.
    pub mail_from: String,
    /// In the order they are sent: those to accept first, then those to refuse.
    pub recipients: Vec<EnvelopeRecipient>,
}

impl Envelope {
    /// The placeholder a recipient may hold for the domain of a `domains:` entry.
    pub const DOMAIN: &'static str = "{domain}";

    /// Whether some address needs the domain of the spec (only `domains:` entries have one).
    pub fn uses_domain(&self) -> bool {
        self.mail_from.contains(Self::DOMAIN)
            || self.recipients.iter().any(|r| r.address.contains(Self::DOMAIN))
    }
}

/// One RCPT TO of the envelope phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeRecipient {
    /// The address, possibly with `{domain}`.
    pub address: String,
    pub expect: EnvelopeExpect,
}

/// What a recipient's reply must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum EnvelopeExpect {
    /// A 2xx: the server takes mail for it (`postmaster@<domain>`, RFC 5321 §4.5.1).
    Accept,
    /// A 4xx or 5xx: the server does not take it (a foreign domain without AUTH: the
    /// open-relay check).
    Reject,
}

impl EnvelopeExpect {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Which per-keyword EHLO series a module's specs export (`ehlo_metrics`). The dashboard
/// and the alerts only ask which extensions and mechanisms are offered, so `offered` is the
/// default: a STARTTLS + AUTH spec then costs some 50 series instead of 74.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum EhloMetrics {
    /// Every known extension and mechanism, at 1 or 0: 38 series for a STARTTLS spec
    /// (`true` says the same).
    All,
    /// Only what the server advertises, at 1.
    #[default]
    Offered,
    /// None (`false` says the same); the SIZE limit and `smtp_starttls_advertised` stay.
    None,
}

impl Module {
    /// A module with the configuration's defaults for all but its transport and deadline:
    /// that deadline for each phase too, the default EHLO name and EHLO gauges, both
    /// address families, and no AUTH, envelope check or delivery. The configuration and
    /// `check` both start from it, so that a new field gets its default in one place.
    pub fn new(transport: Transport, timeout: Duration) -> Module {
        Module {
            transport,
            timeout,
            phase_timeout: timeout,
            ehlo_hostname: super::DEFAULT_EHLO_HOSTNAME.to_owned(),
            ehlo_metrics: EhloMetrics::default(),
            ip_protocol: IpProtocol::Auto,
            auth: None,
            envelope: None,
            delivery: None,
        }
    }

    /// The mode as the configuration names it.
    pub fn tls_mode(&self) -> TlsMode {
        self.transport.mode()
    }

    /// The spec that probes `host:port` with this module, named `target` and `module_name`,
    /// resolving `host` with `resolver`.
    pub fn spec(
        self: &Arc<Module>,
        target: &str,
        host: &str,
        port: u16,
        module_name: &str,
        expect: Arc<Expectations>,
        resolver: &Arc<Resolver>,
    ) -> Result<ProbeSpec, NameError> {
        Ok(ProbeSpec {
            target: target.to_owned(),
            host: host.to_owned(),
            port,
            module_name: module_name.to_owned(),
            transport: self.transport.for_host(host)?,
            module: self.clone(),
            expect,
            resolver: resolver.clone(),
            via: None,
            tlsa: None,
        })
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

/// What to probe: one (target, port) with one module, and the TLS name for that host.
/// How often is the schedule's business ([`Scheduled`]); `/probe` and `check` probe a spec
/// once.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// The target's configured name: the `target` label.
    pub target: String,
    pub host: String,
    pub port: u16,
    /// The module's name: the `module` label.
    pub module_name: String,
    pub module: Arc<Module>,
    /// The module's transport, with the certificate name resolved for this host.
    pub transport: Transport<ServerName<'static>>,
    /// The target's expectations (shared by its ports).
    pub expect: Arc<Expectations>,
    /// Looks `host` up when the spec has no fixed address.
    pub resolver: Arc<Resolver>,
    /// Set on a spec that DNS made (a domain's MX, or a host under `ip_protocol: both`):
    /// the address to connect to, so the probe does not resolve.
    pub via: Option<Arc<Via>>,
    /// On the specs of a domain's delivery port: the MX's TLSA records, when DNSSEC
    /// says they are secure, for the handshake to match (DANE).
    pub tlsa: Option<Arc<crate::dns::TlsaSet>>,
}

/// Where a spec made from DNS connects: which MX (for a domain) and which address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Via {
    /// The MX host, for a domain's specs; empty for a host's addresses.
    pub mx: String,
    pub address: IpAddr,
}

impl ProbeSpec {
    /// The mail domain of a spec that a `domains:` entry made (its target), else `None`.
    pub fn mail_domain(&self) -> Option<&str> {
        self.via.as_ref().filter(|via| !via.mx.is_empty()).map(|_| self.target.as_str())
    }

    /// A stable identity: reloads keep the state of specs whose key did not change.
    pub fn key(&self) -> SpecKey {
        SpecKey {
            target: self.target.clone(),
            port: self.port,
            module: self.module_name.clone(),
            via: self.via.clone(),
        }
    }
}

/// A source of specs that DNS decides, walked by `domains` at the pace of its records'
/// TTLs: a mail domain's MX set, or the addresses of a target's host whose module probes
/// every address (`ip_protocol: both`).
#[derive(Clone, Debug)]
pub struct Expansion {
    /// The `target` label of its specs: the domain, or the target's name.
    pub name: String,
    pub kind: ExpansionKind,
    pub families: &'static [Family],
    /// The ports and modules probed on every address. For a domain, the first is the one
    /// that decides whether the domain is deliverable.
    pub ports: Vec<ExpandedPort>,
    pub interval: Duration,
    pub expect: Arc<Expectations>,
    /// For a domain with its policy checks on: MTA-STS and TLS-RPT, how and how often.
    pub policy: Option<PolicyCheck>,
}

/// How often, and how, a domain's MTA-STS and TLS-RPT are checked.
#[derive(Clone, Debug)]
pub struct PolicyCheck {
    pub interval: Duration,
    pub settings: crate::policy::PolicySettings,
    /// Whether each MX's TLSA records are looked up (on every walk) and matched by the
    /// probes of the delivery port.
    pub dane: bool,
}

/// What an expansion walks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpansionKind {
    /// A mail domain: its MX set, or its own addresses as the implicit MX.
    Domain,
    /// One host name's addresses.
    Host(String),
}

/// One port of an expansion, with the module that probes it.
#[derive(Clone, Debug)]
pub struct ExpandedPort {
    pub port: u16,
    pub module_name: String,
    pub module: Arc<Module>,
}

/// A spec on the schedule: what to probe, and how often.
#[derive(Clone, Debug)]
pub struct Scheduled {
    pub spec: ProbeSpec,
    pub interval: Duration,
}

/// Identity of a probe spec: its label values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpecKey {
    pub target: String,
    pub port: u16,
    pub module: String,
    /// The MX and address of a spec made from DNS.
    pub via: Option<Arc<Via>>,
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
        // Specs without an address keep the hash they always had.
        if let Some(via) = &self.via {
            eat(&[0xff]);
            eat(via.mx.as_bytes());
            eat(&[0xff]);
            match via.address {
                IpAddr::V4(a) => eat(&a.octets()),
                IpAddr::V6(a) => eat(&a.octets()),
            }
        }
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

    /// Whether this shard walks the expansion `name`: a domain's specs all live on one
    /// shard, so that it can tell whether any MX accepts.
    pub fn owns_expansion(&self, name: &str) -> bool {
        self.owns(&SpecKey { target: name.to_owned(), port: 0, module: String::new(), via: None })
    }
}

/// How much history each spec keeps (`history:` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryBounds {
    /// The last probes kept whatever their result.
    pub results: usize,
    /// Failures kept beyond those.
    pub failures: usize,
}

impl Default for HistoryBounds {
    fn default() -> HistoryBounds {
        HistoryBounds { results: 30, failures: 10 }
    }
}
