//! TLS for the probe: trust settings built once, and a handshake that records the
//! certificate verdict instead of aborting on it.
//!
//! `config` builds a [`TlsSettings`] while validating a module, so a bad `ca_file` is a
//! config error, not a probe failure. The probe walk (`probe::mod`) calls [`handshake`]
//! after STARTTLS or right after connect (implicit TLS). The handshake itself only insists
//! that the server holds the key of the certificate it presents; the chain and the name are
//! then verified in full against the module's roots, and the verdict is recorded rather
//! than aborting, so the certificate can be read (expiry, names, fingerprint) even when it
//! is invalid. The walk fails the probe or not, following the module's `on_invalid_cert`.
//! Session resumption is off: every probe times a full handshake. The client
//! configuration is built once per module.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::{Reason, StepError};

/// Where trust anchors come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// Mozilla's root program, compiled in (webpki-roots): works in a bare container.
    Bundled,
    /// The operating system's store (e.g. /etc/ssl/certs), read once at config load.
    System,
    /// Only the certificates in this PEM file.
    CaFile(std::path::PathBuf),
}

/// Why a certificate did not verify, from a fixed set (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertError {
    Expired,
    NotYetValid,
    UnknownIssuer,
    NameMismatch,
    Revoked,
    Other,
}

impl CertError {
    /// Every value, in documentation order.
    pub const ALL: [CertError; 6] = [
        CertError::Expired,
        CertError::NotYetValid,
        CertError::UnknownIssuer,
        CertError::NameMismatch,
        CertError::Revoked,
        CertError::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CertError::Expired => "expired",
            CertError::NotYetValid => "not_yet_valid",
            CertError::UnknownIssuer => "unknown_issuer",
            CertError::NameMismatch => "name_mismatch",
            CertError::Revoked => "revoked",
            CertError::Other => "other",
        }
    }

    fn from_rustls(err: &rustls::Error) -> CertError {
        match err {
            rustls::Error::InvalidCertificate(e) => match e {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => CertError::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    CertError::NotYetValid
                }
                CertificateError::UnknownIssuer => CertError::UnknownIssuer,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    CertError::NameMismatch
                }
                CertificateError::Revoked => CertError::Revoked,
                _ => CertError::Other,
            },
            _ => CertError::Other,
        }
    }
}

/// What a completed handshake negotiated, and what the server's certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLS1.2` or `TLS1.3`.
    pub version: String,
    /// The IANA name of the cipher suite.
    pub cipher: String,
    /// The key-exchange group (e.g. `X25519`), when one was used.
    pub kx_group: Option<String>,
    /// `None` when the chain verified; otherwise why not.
    pub cert_error: Option<CertError>,
    /// The verifier's own words about the failure, for logs.
    pub cert_error_detail: Option<String>,
    /// The leaf certificate's notAfter, in seconds since the Unix epoch.
    pub leaf_not_after: Option<i64>,
    /// The earliest notAfter among all certificates the server presented.
    pub chain_earliest_not_after: Option<i64>,
    /// The leaf certificate's subject alternative names (DNS names and IP addresses).
    pub leaf_names: Vec<String>,
    pub subject_cn: String,
    pub issuer_cn: String,
    /// The leaf's serial number, lower-case hex.
    pub serial: String,
    /// SHA-256 of the leaf's DER encoding, lower-case hex.
    pub fingerprint_sha256: String,
}

/// A module's TLS trust settings, built once at config load.
#[derive(Debug)]
pub struct TlsSettings {
    /// Checks chains and names against the configured roots, after the handshake.
    verifier: Arc<WebPkiServerVerifier>,
    /// The client configuration every handshake of the module shares.
    config: Arc<ClientConfig>,
    /// Fail the probe when the certificate does not verify (else only report it).
    pub fail_on_invalid_cert: bool,
    /// Descriptions of chains seen before, keyed by their DER bytes: a server presents the
    /// same chain probe after probe, and parsing it again is a tenth of a probe's CPU.
    described: Mutex<HashMap<Vec<u8>, Arc<CertFields>>>,
}

/// How many distinct chains a module remembers before it starts over.
const DESCRIBED_CHAINS_MAX: usize = 1024;

/// What the presented chain says, as `TlsInfo` carries it.
#[derive(Debug, Default)]
struct CertFields {
    leaf_not_after: Option<i64>,
    chain_earliest_not_after: Option<i64>,
    leaf_names: Vec<String>,
    subject_cn: String,
    issuer_cn: String,
    serial: String,
    fingerprint_sha256: String,
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

fn bundled_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Arc::new(store)
        })
        .clone()
}

fn load_roots(roots: &Roots) -> Result<Arc<RootCertStore>, String> {
    match roots {
        Roots::Bundled => Ok(bundled_roots()),
        Roots::System => {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let why = loaded.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!("system_roots: no usable certificate in the system store{why}"));
            }
            Ok(Arc::new(store))
        }
        Roots::CaFile(path) => load_ca_file(path).map(Arc::new),
    }
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        store.add(cert).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("ca_file {}: no PEM certificate found", path.display()));
    }
    Ok(store)
}

impl TlsSettings {
    /// Loads the trust anchors, fixes the policy for invalid certificates, and builds the
    /// client configuration.
    pub fn new(roots: &Roots, fail_on_invalid_cert: bool) -> Result<TlsSettings, String> {
        let verifier = WebPkiServerVerifier::builder_with_provider(load_roots(roots)?, provider())
            .build()
            .map_err(|e| e.to_string())?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SignaturesOnly(verifier.clone())))
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Ok(TlsSettings {
            verifier,
            config: Arc::new(config),
            fail_on_invalid_cert,
            described: Mutex::default(),
        })
    }

    /// The description of `chain`, from the cache or parsed now.
    fn describe(&self, chain: &[CertificateDer<'_>]) -> Arc<CertFields> {
        let key: Vec<u8> = chain
            .iter()
            .flat_map(|c| (c.len() as u32).to_be_bytes().into_iter().chain(c.iter().copied()))
            .collect();
        if let Some(fields) = self.described.lock().expect("description cache lock").get(&key) {
            return fields.clone();
        }
        let fields = Arc::new(describe_chain(chain));
        let mut cache = self.described.lock().expect("description cache lock");
        if cache.len() >= DESCRIBED_CHAINS_MAX {
            cache.clear();
        }
        cache.insert(key, fields.clone());
        fields
    }

    /// Verifies the presented chain and name; `None` when they are valid.
    fn verdict(&self, chain: Option<&[CertificateDer<'_>]>, name: &ServerName<'_>) -> Option<rustls::Error> {
        match chain {
            Some([leaf, intermediates @ ..]) => {
                self.verifier.verify_server_cert(leaf, intermediates, name, &[], UnixTime::now()).err()
            }
            _ => Some(rustls::Error::NoCertificatesPresented),
        }
    }
}

/// Runs the TLS handshake on `stream` and describes what was negotiated. An invalid
/// certificate does not make this fail: see `TlsInfo::cert_error`.
pub async fn handshake<S>(
    settings: &TlsSettings,
    server_name: ServerName<'static>,
    stream: S,
) -> Result<(TlsStream<S>, TlsInfo), StepError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = TlsConnector::from(settings.config.clone())
        .connect(server_name.clone(), stream)
        .await
        .map_err(classify)?;
    let conn = tls.get_ref().1;
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher =
        conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown").to_owned();
    let kx_group = conn.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name()));
    let verdict = settings.verdict(conn.peer_certificates(), &server_name);
    let (cert_error, cert_error_detail) = match &verdict {
        Some(err) => (Some(CertError::from_rustls(err)), Some(err.to_string())),
        None => (None, None),
    };
    let mut info = TlsInfo {
        version,
        cipher,
        kx_group,
        cert_error,
        cert_error_detail,
        leaf_not_after: None,
        chain_earliest_not_after: None,
        leaf_names: Vec::new(),
        subject_cn: String::new(),
        issuer_cn: String::new(),
        serial: String::new(),
        fingerprint_sha256: String::new(),
    };
    if let Some(chain) = conn.peer_certificates() {
        let fields = settings.describe(chain);
        info.leaf_not_after = fields.leaf_not_after;
        info.chain_earliest_not_after = fields.chain_earliest_not_after;
        info.leaf_names.clone_from(&fields.leaf_names);
        info.subject_cn.clone_from(&fields.subject_cn);
        info.issuer_cn.clone_from(&fields.issuer_cn);
        info.serial.clone_from(&fields.serial);
        info.fingerprint_sha256.clone_from(&fields.fingerprint_sha256);
    }
    Ok((tls, info))
}

/// Parses the presented chain (leaf first) into the fields `TlsInfo` reports.
fn describe_chain(chain: &[CertificateDer<'_>]) -> CertFields {
    let mut info = CertFields::default();
    let parsed: Vec<_> = chain
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c))
        .collect();
    info.chain_earliest_not_after = parsed.iter().map(|c| c.validity().not_after.timestamp()).min();
    let (Some(leaf_der), Some(leaf)) = (chain.first(), parsed.first()) else { return info };
    info.leaf_not_after = Some(leaf.validity().not_after.timestamp());
    info.leaf_names = subject_alt_names(leaf);
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or("").to_owned()
    };
    info.subject_cn = cn(leaf.subject());
    info.issuer_cn = cn(leaf.issuer());
    info.serial = hex(leaf.raw_serial());
    info.fingerprint_sha256 = hex(ring::digest::digest(&ring::digest::SHA256, leaf_der).as_ref());
    info
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The DNS names and IP addresses in a certificate's subjectAltName extension.
fn subject_alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Splits handshake errors: a server that only speaks what rustls does not support,
/// another TLS failure, or the connection itself failing.
fn classify(err: std::io::Error) -> StepError {
    use rustls::AlertDescription as Alert;
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::PeerIncompatible(why)) => {
            StepError::new(Reason::TlsUnsupported, format!("no common TLS version or cipher: {why:?}"))
        }
        Some(rustls::Error::AlertReceived(alert @ (Alert::ProtocolVersion | Alert::HandshakeFailure | Alert::InsufficientSecurity))) => {
            StepError::new(
                Reason::TlsUnsupported,
                format!("the server refused every TLS version or cipher offered (alert {alert:?}); it may only speak TLS 1.0/1.1 or legacy ciphers"),
            )
        }
        Some(tls_err) => StepError::new(Reason::TlsHandshake, tls_err.to_string()),
        None => {
            let reason = match Reason::from_io(&err) {
                Reason::Io => Reason::TlsHandshake,
                other => other,
            };
            StepError::new(reason, format!("during TLS handshake: {err}"))
        }
    }
}

/// Lets the handshake accept any chain and name (they are verified afterwards, see
/// `TlsSettings::verdict`), but still checks the handshake signatures: a server must hold
/// the key of the certificate it presents.
struct SignaturesOnly(Arc<WebPkiServerVerifier>);

impl fmt::Debug for SignaturesOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignaturesOnly")
    }
}

impl ServerCertVerifier for SignaturesOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
