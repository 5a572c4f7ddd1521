//! The web configuration (`--web.config.file`): TLS, basic authentication and response
//! headers for every endpoint, in the YAML format of the Prometheus exporter-toolkit, so
//! that a file written for another exporter works here.
//!
//! Part of `http`, in front of the routes. The file is read at start (a bad one fails the
//! start), then looked at again at most once a second as connections arrive: when it has
//! changed it is read again, and a bad version keeps the previous one in force (logged,
//! and `smtp_exporter_web_config_last_reload_successful` says so). Passwords are bcrypt
//! hashes, checked off the runtime's workers, two at a time, and the same for known and
//! unknown users; a pair that matched once is remembered, so a scrape every few seconds
//! costs one hash check, not one each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DistinguishedName, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::sync::Semaphore;

/// The largest web configuration file, certificate or key read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// How often the file is looked at for changes, at most.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// The headers the exporter-toolkit format lets a file set.
const ALLOWED_HEADERS: [&str; 5] = [
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawWebConfig {
    tls_server_config: Option<RawTlsServer>,
    http_server_config: Option<RawHttpServer>,
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTlsServer {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Vec<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Vec<String>,
    curve_preferences: Vec<String>,
    /// rustls always picks in its own order of preference; accepted for compatibility.
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawHttpServer {
    /// The exporter speaks HTTP/1.1 only; accepted for compatibility.
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

/// A loaded web configuration.
pub struct WebConfig {
    /// TLS for every connection, when configured.
    pub tls: Option<Arc<ServerConfig>>,
    /// Subject alternative names of which a client certificate must hold one (if any).
    pub client_allowed_sans: Vec<String>,
    /// User name → bcrypt hash; empty: no authentication.
    users: BTreeMap<String, String>,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The certificate, key and client CA files it was built from, watched for changes
    /// like the file itself (a renewed certificate is taken up without a restart).
    files: Vec<PathBuf>,
    /// Every client must present a certificate.
    client_certs: bool,
}

impl WebConfig {
    /// No TLS, no authentication, no headers: what runs without `--web.config.file`.
    pub fn open() -> WebConfig {
        WebConfig {
            tls: None,
            client_allowed_sans: Vec::new(),
            users: BTreeMap::new(),
            headers: Vec::new(),
            files: Vec::new(),
            client_certs: false,
        }
    }

    /// Reads and checks the file; relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let bytes = crate::files::read_bounded(path, MAX_FILE_BYTES)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        let raw: RawWebConfig =
            yaml_serde::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        WebConfig::build(raw, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn build(raw: RawWebConfig, base: &Path) -> Result<WebConfig, String> {
        for (user, hash) in &raw.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(format!("basic_auth_users: {user:?} is not a valid user name"));
            }
            if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
                || hash.len() != 60
            {
                return Err(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (make one with htpasswd -nBC 10 {user})"
                ));
            }
        }
        let http = raw.http_server_config.unwrap_or_default();
        let _ = http.http2;
        let headers = http
            .headers
            .iter()
            .map(|(name, value)| {
                if !ALLOWED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                    return Err(format!(
                        "http_server_config.headers: {name:?} cannot be set (one of {})",
                        ALLOWED_HEADERS.join(", ")
                    ));
                }
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|e| format!("http_server_config.headers: {e}"))?;
                let value = HeaderValue::try_from(value.as_str())
                    .map_err(|e| format!("http_server_config.headers.{name}: {e}"))?;
                Ok((name, value))
            })
            .collect::<Result<_, String>>()?;
        let (tls, client_allowed_sans, files, client_certs) = match raw.tls_server_config {
            None => (None, Vec::new(), Vec::new(), false),
            Some(tls) => {
                let sans = tls.client_allowed_sans.clone();
                let client_certs = matches!(
                    tls.client_auth_type.as_deref(),
                    Some("RequireAndVerifyClientCert" | "RequireAnyClientCert" | "RequireClientCert")
                );
                let files = [&tls.cert_file, &tls.key_file, &tls.client_ca_file]
                    .into_iter()
                    .flatten()
                    .map(|path| resolve(base, path))
                    .collect();
                let server = tls_server(tls, base).map_err(|e| format!("tls_server_config: {e}"))?;
                (Some(Arc::new(server)), sans, files, client_certs)
            }
        };
        Ok(WebConfig { tls, client_allowed_sans, users: raw.basic_auth_users, headers, files, client_certs })
    }

    /// Whether requests must authenticate.
    pub fn wants_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// What `next` would turn off of this configuration's guard (TLS, basic
    /// authentication, required client certificates), in words; `None` when it keeps or
    /// raises every one. A reload never lowers the guard: a truncated or emptied file
    /// would otherwise open the exporter at run time.
    pub fn lowered_by(&self, next: &WebConfig) -> Option<String> {
        let lost: Vec<&str> = [
            (self.tls.is_some() && next.tls.is_none(), "TLS"),
            (self.wants_auth() && !next.wants_auth(), "basic authentication"),
            (self.client_certs && !next.client_certs, "required client certificates"),
        ]
        .into_iter()
        .filter_map(|(lost, what)| lost.then_some(what))
        .collect();
        (!lost.is_empty()).then(|| {
            format!(
                "the new version would turn off {} at run time; restart the exporter to serve with less",
                lost.join(" and ")
            )
        })
    }

    /// The hash an unknown user is checked against: the most expensive one configured,
    /// so that no user name answers faster than the slowest real one.
    fn decoy_hash(&self) -> String {
        let cost = |hash: &String| hash.get(4..6).and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
        self.users.values().max_by_key(|h| cost(h)).cloned().unwrap_or_default()
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// The PEM text of a certificate or key, from the file or inline.
fn pem(file: &Option<PathBuf>, inline: &Option<String>, what: &str, base: &Path) -> Result<Vec<u8>, String> {
    match (file, inline) {
        (Some(_), Some(_)) => Err(format!("{what}_file and {what} are mutually exclusive")),
        (Some(path), None) => {
            let path = resolve(base, path);
            crate::files::read_bounded(&path, MAX_FILE_BYTES)
                .map_err(|e| format!("{what}_file {}: {e}", path.display()))
        }
        (None, Some(text)) => Ok(text.as_bytes().to_vec()),
        (None, None) => Err(format!("{what}_file is required")),
    }
}

/// The server side of TLS from the exporter-toolkit settings.
fn tls_server(raw: RawTlsServer, base: &Path) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem(&raw.cert_file, &raw.cert, "cert", base)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cert_file: {e}"))?;
    if chain.is_empty() {
        return Err("cert_file: no PEM certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&pem(&raw.key_file, &raw.key, "key", base)?)
        .map_err(|e| format!("key_file: {e}"))?;
    let versions = versions(raw.min_version.as_deref(), raw.max_version.as_deref())?;
    let mut provider = (*provider).clone();
    if !raw.cipher_suites.is_empty() {
        provider.cipher_suites = each_offered(&raw.cipher_suites, "cipher_suites", cipher_suite)?;
        // TLS 1.3 suites are not configurable in the toolkit's format: keep them.
        provider
            .cipher_suites
            .extend(rustls::crypto::ring::DEFAULT_CIPHER_SUITES.iter().filter(|s| s.tls13().is_some()));
    }
    if !raw.curve_preferences.is_empty() {
        provider.kx_groups = each_offered(&raw.curve_preferences, "curve_preferences", kx_group)?;
    }
    let _ = raw.prefer_server_cipher_suites;
    let verifier =
        client_verifier(raw.client_auth_type.as_deref(), raw.client_ca_file.as_deref(), base, &provider)?;
    if !raw.client_allowed_sans.is_empty() && !verifier.offer_client_auth() {
        return Err("client_allowed_sans needs a client_auth_type that asks for a certificate".into());
    }
    // An unverified certificate can name any SAN: a self-signed one passes the check.
    if let (false, Some(kind @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert"))) =
        (raw.client_allowed_sans.is_empty(), raw.client_auth_type.as_deref())
    {
        return Err(format!(
            "client_allowed_sans needs verified certificates (client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven, with client_ca_file): under {kind} any self-signed certificate can name an allowed SAN"
        ));
    }
    ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("cert_file and key_file: {e}"))
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |name: &str, field: &str| match name {
        "TLS12" => Ok(2),
        "TLS13" => Ok(3),
        "TLS10" | "TLS11" => Err(format!("{field}: {name} is not supported (TLS12 or TLS13)")),
        other => Err(format!("{field}: unknown version {other:?} (TLS12 or TLS13)")),
    };
    let min = min.map(|m| rank(m, "min_version")).transpose()?.unwrap_or(2);
    let max = max.map(|m| rank(m, "max_version")).transpose()?.unwrap_or(3);
    if min > max {
        return Err("min_version is above max_version".into());
    }
    Ok([(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(rank, _)| (min..=max).contains(rank))
        .map(|(_, v)| v)
        .collect())
}

/// What each of `names` stands for, or which one rustls does not offer.
fn each_offered<T>(
    names: &[String],
    field: &str,
    find: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, String> {
    names
        .iter()
        .map(|name| find(name).ok_or_else(|| format!("{field}: {name:?} is not one rustls offers")))
        .collect()
}

fn cipher_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .find(|s| s.suite().as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .copied()
}

fn kx_group(name: &str) -> Option<&'static dyn rustls::crypto::SupportedKxGroup> {
    use rustls::crypto::ring::kx_group;
    match name {
        "X25519" => Some(kx_group::X25519),
        "CurveP256" => Some(kx_group::SECP256R1),
        "CurveP384" => Some(kx_group::SECP384R1),
        _ => None,
    }
}

/// The client certificate policy of `client_auth_type`.
fn client_verifier(
    kind: Option<&str>,
    ca_file: Option<&Path>,
    base: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let kind = kind.unwrap_or("NoClientCert");
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let path = ca_file
            .map(|p| resolve(base, p))
            .ok_or(format!("client_auth_type {kind} needs a client_ca_file"))?;
        let pem = crate::files::read_bounded(&path, MAX_FILE_BYTES)
            .map_err(|e| format!("client_ca_file {}: {e}", path.display()))?;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            store
                .add(cert.map_err(|e| format!("client_ca_file: {e}"))?)
                .map_err(|e| format!("client_ca_file: {e}"))?;
        }
        if store.is_empty() {
            return Err("client_ca_file: no PEM certificate found".into());
        }
        Ok(Arc::new(store))
    };
    let verifying = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, String> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots()?, Arc::new(provider.clone()));
        let builder = if optional { builder.allow_unauthenticated() } else { builder };
        builder.build().map_err(|e| e.to_string())
    };
    match kind {
        "NoClientCert" => {
            if ca_file.is_some() {
                return Err("client_ca_file is set but client_auth_type is NoClientCert".into());
            }
            Ok(WebPkiClientVerifier::no_client_auth())
        }
        "RequestClientCert" => Ok(Arc::new(AnyClientCert { mandatory: false, algorithms: provider.signature_verification_algorithms })),
        // RequireClientCert: the toolkit's older name, still read there.
        "RequireAnyClientCert" | "RequireClientCert" => Ok(Arc::new(AnyClientCert { mandatory: true, algorithms: provider.signature_verification_algorithms })),
        "VerifyClientCertIfGiven" => verifying(true),
        "RequireAndVerifyClientCert" => verifying(false),
        other => Err(format!(
            "client_auth_type: unknown value {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        )),
    }
}

/// Short names for the signature checks' types, which rustls' traits spell out.
type Der<'a> = CertificateDer<'a>;
type Dss = rustls::DigitallySignedStruct;
type Signature = Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>;

/// Asks for a client certificate without verifying its chain (the toolkit's
/// `RequestClientCert` and `RequireAnyClientCert`); the handshake still proves that the
/// client holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> Signature {
        rustls::crypto::verify_tls12_signature(msg, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> Signature {
        rustls::crypto::verify_tls13_signature(msg, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Whether a client certificate names one of `allowed` (DNS names, IP addresses, email
/// addresses or URIs in its subject alternative names).
pub fn client_san_allowed(chain: Option<&[CertificateDer<'_>]>, allowed: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Some(leaf) = chain.and_then(|c| c.first()) else { return false };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else { return false };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return false };
    san.value.general_names.iter().any(|name| {
        let text = match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => (*s).to_owned(),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .map(|b| std::net::IpAddr::from(b).to_string())
                    .unwrap_or_default(),
                16 => <[u8; 16]>::try_from(*bytes)
                    .map(|b| std::net::IpAddr::from(b).to_string())
                    .unwrap_or_default(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        allowed.iter().any(|a| a == &text)
    })
}

/// The web configuration in force, and the file it comes from.
pub struct WebSettings {
    file: Option<PathBuf>,
    current: RwLock<Arc<WebConfig>>,
    /// When the files were last looked at, and their (modified, length) then: the file
    /// itself, then the ones it names.
    seen: Mutex<(std::time::Instant, Stamps)>,
    /// Password checks that passed: (user, password, hash) digests, bounded.
    passed: Mutex<HashSet<[u8; 32]>>,
    /// bcrypt checks running at once.
    hashing: Arc<Semaphore>,
    /// Checks waiting for a bcrypt slot now, by source address.
    waiting: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// `smtp_exporter_web_config_last_reload_successful`.
    pub reload_successful: prometheus::IntGauge,
}

/// How many passed checks are remembered before the memory starts over.
const PASSED_MAX: usize = 1024;

/// What a request's credentials come to.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    Denied,
    /// Too many checks are waiting: answered at once rather than queued, so that wrong
    /// passwords cost the one who sends them, not the next scrape.
    Busy,
}

/// Password checks from one address that may wait for a bcrypt slot; more are answered
/// `Busy`, so that one address flooding wrong passwords delays others by a few checks.
const MAX_WAITING_PER_SOURCE: usize = 4;
/// Password checks that may wait in all.
const MAX_WAITING_CHECKS: usize = 64;

impl WebSettings {
    /// Loads `file` (none: no TLS, no authentication).
    pub fn new(
        file: Option<PathBuf>,
        reload_successful: prometheus::IntGauge,
    ) -> Result<WebSettings, String> {
        let config = match &file {
            Some(path) => WebConfig::load(path)?,
            None => WebConfig::open(),
        };
        let stamps = file.as_deref().map(|path| stamps(path, &config)).unwrap_or_default();
        reload_successful.set(1);
        Ok(WebSettings {
            file,
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new((std::time::Instant::now(), stamps)),
            passed: Mutex::default(),
            hashing: Arc::new(Semaphore::new(2)),
            waiting: Mutex::default(),
            reload_successful,
        })
    }

    /// The configuration in force, read again first when the file or one it names has
    /// changed (at most one look a second).
    pub fn current(&self) -> Arc<WebConfig> {
        if let Some(path) = &self.file {
            let mut seen = self.seen.lock().expect("web config lock");
            if seen.0.elapsed() >= RECHECK_EVERY {
                seen.0 = std::time::Instant::now();
                let in_force = self.current.read().expect("web config lock").clone();
                let now = stamps(path, &in_force);
                if now != seen.1 {
                    seen.1 = now;
                    let loaded =
                        WebConfig::load(path).and_then(|config| match in_force.lowered_by(&config) {
                            Some(why) => Err(format!("{}: {why}", path.display())),
                            None => Ok(config),
                        });
                    match loaded {
                        Ok(config) => {
                            // Watch what the new version names from now on.
                            seen.1 = stamps(path, &config);
                            *self.current.write().expect("web config lock") = Arc::new(config);
                            self.passed.lock().expect("passed lock").clear();
                            self.reload_successful.set(1);
                            tracing::info!(file = %path.display(), "web configuration reloaded");
                        }
                        Err(e) => {
                            self.reload_successful.set(0);
                            tracing::error!(error = %e, "web configuration reload failed; keeping the previous one");
                        }
                    }
                }
            }
        }
        self.current.read().expect("web config lock").clone()
    }

    /// Checks a request's `Authorization` header against `config`'s users.
    pub async fn authorize(
        &self,
        config: &WebConfig,
        header: Option<&HeaderValue>,
        peer: std::net::IpAddr,
        on_wait: impl FnOnce(),
    ) -> Access {
        if !config.wants_auth() {
            return Access::Granted;
        }
        let Some((user, password)) = header.and_then(basic_credentials) else { return Access::Denied };
        // An unknown user is checked against a real hash all the same, so that the time an
        // answer takes does not tell which user names exist.
        let (known, hash) = match config.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => (false, config.decoy_hash()),
        };
        let digest =
            ring::digest::digest(&ring::digest::SHA256, format!("{user}\0{password}\0{hash}").as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        if known && self.passed.lock().expect("passed lock").contains(&key) {
            return Access::Granted;
        }
        // Waiting for the check, the connection may give way to another.
        on_wait();
        let permit = {
            let Some(_waiting) = Waiting::count(&self.waiting, peer) else { return Access::Busy };
            self.hashing.clone().acquire_owned().await
        };
        let Ok(permit) = permit else { return Access::Denied };
        // The permit goes with the check: a connection that gives way while its hash is
        // computed does not let another start before this one ends.
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if known && matches {
            let mut passed = self.passed.lock().expect("passed lock");
            if passed.len() >= PASSED_MAX {
                passed.clear();
            }
            passed.insert(key);
            Access::Granted
        } else {
            Access::Denied
        }
    }
}

/// One check counted among those waiting for a bcrypt slot while it lives (a request
/// dropped while it waits is uncounted too).
struct Waiting<'a> {
    peer: std::net::IpAddr,
    counts: &'a Mutex<HashMap<std::net::IpAddr, usize>>,
}

impl<'a> Waiting<'a> {
    /// Counts a check from `peer`, unless its address, or everyone, has as many waiting as
    /// allowed.
    fn count(
        counts: &'a Mutex<HashMap<std::net::IpAddr, usize>>,
        peer: std::net::IpAddr,
    ) -> Option<Waiting<'a>> {
        let mut held = counts.lock().expect("waiting lock");
        let total: usize = held.values().sum();
        let mine = held.get(&peer).copied().unwrap_or(0);
        if mine >= MAX_WAITING_PER_SOURCE || total >= MAX_WAITING_CHECKS {
            return None;
        }
        *held.entry(peer).or_default() += 1;
        Some(Waiting { peer, counts })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut held = self.counts.lock().expect("waiting lock");
        if let Some(n) = held.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.peer);
            }
        }
    }
}

/// (modified time, length) of each file, `None` for one that cannot be read: what tells
/// a change.
type Stamps = Vec<Option<(SystemTime, u64)>>;

/// The stamps of the web configuration file and of the files `config` names.
fn stamps(path: &Path, config: &WebConfig) -> Stamps {
    std::iter::once(path)
        .chain(config.files.iter().map(PathBuf::as_path))
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

/// The user and password of a `Basic` authorization header.
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client of the unit tests.
    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn build(yaml: &str) -> Result<WebConfig, String> {
        let raw: RawWebConfig = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        WebConfig::build(raw, Path::new(""))
    }

    #[test]
    fn the_toolkit_format_is_read_and_checked() {
        let ok = build("basic_auth_users:\n  prometheus: $2y$10$Kj2NOcqXgqK0Nq7sM8Bx0e6GEq4K7yUVMvB6u7S2uT7d9Lx6C.0aO\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n").unwrap();
        assert!(ok.wants_auth());
        assert_eq!(ok.headers.len(), 1);
        for (yaml, want) in [
            (
                "basic_auth_users:\n  u: plaintext\n",
                "basic_auth_users.u: not a bcrypt hash (make one with htpasswd -nBC 10 u)",
            ),
            (
                "http_server_config:\n  headers:\n    Set-Cookie: x\n",
                "http_server_config.headers: \"Set-Cookie\" cannot be set",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n",
                "tls_server_config: cert_file /nonexistent.pem: No such file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n",
                "tls_server_config: cert_file a",
            ),
            ("bogus: 1\n", "unknown field `bogus`"),
        ] {
            let err = build(yaml).err().unwrap_or_default();
            assert!(err.contains(want), "{yaml}: {err}");
        }
        assert_eq!(
            versions(Some("TLS11"), None).unwrap_err(),
            "min_version: TLS11 is not supported (TLS12 or TLS13)"
        );
        assert_eq!(versions(Some("TLS13"), None).unwrap().len(), 1);
    }

    /// Issue 26: one address may have a few checks waiting, another address its own; all
    /// addresses together a bounded number; a check that ends (or is dropped) is uncounted.
    #[test]
    fn waiting_checks_are_bounded_per_address_and_in_all() {
        let counts = Mutex::default();
        let (a, b) = (LOCAL, std::net::IpAddr::from([127, 0, 0, 2]));
        let mine: Vec<_> = (0..MAX_WAITING_PER_SOURCE).map(|_| Waiting::count(&counts, a).unwrap()).collect();
        assert!(Waiting::count(&counts, a).is_none(), "its address has as many waiting as allowed");
        let other = Waiting::count(&counts, b);
        assert!(other.is_some(), "another address is not held up by it");
        drop(mine);
        assert!(Waiting::count(&counts, a).is_some(), "dropped checks are uncounted");
        drop(other);
        assert!(counts.lock().unwrap().is_empty());
        let all: Vec<_> = (0..MAX_WAITING_CHECKS)
            .map(|n| {
                Waiting::count(&counts, std::net::IpAddr::from([10, 0, (n >> 8) as u8, n as u8])).unwrap()
            })
            .collect();
        assert!(Waiting::count(&counts, b).is_none(), "everyone has as many waiting as allowed");
        drop(all);
    }

    /// Issue 26: an unknown user is checked against the most expensive hash, whatever the
    /// order of the users.
    #[test]
    fn the_decoy_is_the_most_expensive_hash() {
        let hash = |cost: &str| format!("$2y${cost}$Kj2NOcqXgqK0Nq7sM8Bx0e6GEq4K7yUVMvB6u7S2uT7d9Lx6C.0aO");
        let users = [("a", "10"), ("b", "12"), ("c", "04")].map(|(u, c)| (u.to_owned(), hash(c))).into();
        let config = WebConfig::build(
            RawWebConfig { basic_auth_users: users, ..RawWebConfig::default() },
            Path::new(""),
        )
        .unwrap();
        assert_eq!(config.decoy_hash(), hash("12"));
        assert_eq!(WebConfig::open().decoy_hash(), "");
    }

    /// Issue 26: what a reload may not turn off, named; raising or keeping the guard is
    /// fine.
    #[test]
    fn a_reload_may_not_lower_the_guard() {
        let hash = "$2y$10$Kj2NOcqXgqK0Nq7sM8Bx0e6GEq4K7yUVMvB6u7S2uT7d9Lx6C.0aO".to_owned();
        let with_users = || {
            let raw = RawWebConfig {
                basic_auth_users: [("u".to_owned(), hash.clone())].into(),
                ..RawWebConfig::default()
            };
            WebConfig::build(raw, Path::new("")).unwrap()
        };
        let open = WebConfig::open();
        assert_eq!(
            with_users().lowered_by(&open).as_deref(),
            Some("the new version would turn off basic authentication at run time; restart the exporter to serve with less")
        );
        assert_eq!(open.lowered_by(&with_users()), None);
        assert_eq!(with_users().lowered_by(&with_users()), None);
        let mut tls = WebConfig::open();
        tls.tls = with_users().tls.clone().or_else(|| {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let chain = vec![made.cert.der().clone()];
            let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
            Some(Arc::new(
                ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .unwrap(),
            ))
        });
        tls.client_certs = true;
        tls.users = with_users().users;
        assert_eq!(
            tls.lowered_by(&open).as_deref(),
            Some("the new version would turn off TLS and basic authentication and required client certificates at run time; restart the exporter to serve with less")
        );
    }

    #[test]
    fn basic_credentials_are_read() {
        let header = HeaderValue::from_static("Basic dXNlcjpwYTpzcw==");
        assert_eq!(basic_credentials(&header), Some(("user".into(), "pa:ss".into())));
        assert_eq!(basic_credentials(&HeaderValue::from_static("Bearer x")), None);
    }

    #[tokio::test]
    async fn passwords_are_checked_with_bcrypt_for_known_and_unknown_users() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let raw =
            RawWebConfig { basic_auth_users: [("alice".to_owned(), hash)].into(), ..RawWebConfig::default() };
        let config = WebConfig::build(raw, Path::new("")).unwrap();
        let settings = WebSettings::new(None, prometheus::IntGauge::new("t", "t").unwrap()).unwrap();
        let header = |user: &str, pw: &str| {
            HeaderValue::try_from(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
            ))
            .unwrap()
        };
        assert_eq!(
            settings.authorize(&config, Some(&header("alice", "right")), LOCAL, || {}).await,
            Access::Granted
        );
        assert_eq!(
            settings.authorize(&config, Some(&header("alice", "right")), LOCAL, || {}).await,
            Access::Granted
        );
        assert_eq!(
            settings.authorize(&config, Some(&header("alice", "wrong")), LOCAL, || {}).await,
            Access::Denied
        );
        assert_eq!(
            settings.authorize(&config, Some(&header("mallory", "right")), LOCAL, || {}).await,
            Access::Denied
        );
        assert_eq!(settings.authorize(&config, None, LOCAL, || {}).await, Access::Denied);
    }

    #[test]
    fn user_names_and_hashes_are_checked_one_by_one() {
        let hash = "$2y$10$Kj2NOcqXgqK0Nq7sM8Bx0e6GEq4K7yUVMvB6u7S2uT7d9Lx6C.0aO";
        assert_eq!(hash.len(), 60);
        for (user, want) in [("\"\"", r#""""#), ("\"a:b\"", r#""a:b""#)] {
            let err = build(&format!("basic_auth_users:\n  {user}: {hash}\n")).err().unwrap_or_default();
            assert_eq!(err, format!("basic_auth_users: {want} is not a valid user name"));
        }
        // A bcrypt prefix of the wrong length, and the right length without the prefix.
        for bad in [&hash[..59], &hash.replace("$2y$", "$2x$")] {
            let err = build(&format!("basic_auth_users:\n  u: {bad}\n")).err().unwrap_or_default();
            assert!(err.starts_with("basic_auth_users.u: not a bcrypt hash"), "{bad}: {err}");
        }
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            build(&format!("basic_auth_users:\n  u: {}\n", hash.replace("$2y$", prefix))).unwrap();
        }
    }

    /// Passed checks are remembered, up to `PASSED_MAX`; then the memory starts over.
    #[tokio::test]
    async fn passed_checks_are_remembered_within_their_bound() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let users = ["alice", "bob", "dave"].map(|u| (u.to_owned(), hash.clone())).into();
        let raw = RawWebConfig { basic_auth_users: users, ..RawWebConfig::default() };
        let config = WebConfig::build(raw, Path::new("")).unwrap();
        let settings = WebSettings::new(None, prometheus::IntGauge::new("t", "t").unwrap()).unwrap();
        let check = |user: &str| {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:right"));
            let header = HeaderValue::try_from(format!("Basic {basic}")).unwrap();
            let (settings, config) = (&settings, &config);
            async move { settings.authorize(config, Some(&header), LOCAL, || {}).await }
        };
        let remembered = || settings.passed.lock().unwrap().len();
        assert_eq!(check("alice").await, Access::Granted);
        assert_eq!(remembered(), 1);
        settings.passed.lock().unwrap().extend((1..PASSED_MAX - 1).map(|n| {
            let mut key = [7u8; 32];
            key[..8].copy_from_slice(&(n as u64).to_le_bytes());
            key
        }));
        assert_eq!(check("carol").await, Access::Denied);
        assert_eq!(remembered(), PASSED_MAX - 1, "a failed check is not remembered");
        assert_eq!(check("bob").await, Access::Granted);
        assert_eq!(remembered(), PASSED_MAX, "the last place below the bound is used");
        assert_eq!(check("alice").await, Access::Granted);
        assert_eq!(remembered(), PASSED_MAX, "a remembered check is not added again");
        assert_eq!(check("dave").await, Access::Granted);
        assert_eq!(remembered(), 1, "a new check at the bound starts the memory over");
    }

    /// A renewed certificate is taken up without a restart, as a changed file is.
    #[test]
    fn a_renewed_certificate_is_taken_up() {
        let dir = std::env::temp_dir().join(format!("smtp-exporter-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write_cert = |name: &str| {
            let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            std::fs::write(dir.join("web.pem"), made.cert.pem()).unwrap();
            std::fs::write(dir.join("web.key"), made.signing_key.serialize_pem()).unwrap();
        };
        write_cert("localhost");
        let file = dir.join("web.yml");
        std::fs::write(&file, "tls_server_config:\n  cert_file: web.pem\n  key_file: web.key\n").unwrap();
        let gauge = prometheus::IntGauge::new("t", "t").unwrap();
        let settings = WebSettings::new(Some(file), gauge.clone()).unwrap();
        let first = settings.current();
        std::thread::sleep(RECHECK_EVERY + Duration::from_millis(100));
        assert!(Arc::ptr_eq(&first, &settings.current()), "nothing changed, nothing reloaded");
        write_cert("renewed.localhost");
        std::thread::sleep(RECHECK_EVERY + Duration::from_millis(100));
        assert!(!Arc::ptr_eq(&first, &settings.current()), "the renewed certificate is in force");
        assert_eq!(gauge.get(), 1);
        // A broken key keeps the certificate in force.
        let second = settings.current();
        std::fs::write(dir.join("web.key"), "not a key").unwrap();
        std::thread::sleep(RECHECK_EVERY + Duration::from_millis(100));
        assert!(Arc::ptr_eq(&second, &settings.current()));
        assert_eq!(gauge.get(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
