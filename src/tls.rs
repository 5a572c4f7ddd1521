//! TLS for the probe: trust settings built once, and a handshake that records the
//! certificate verdict instead of aborting on it.
//!
//! Beside the data flow, used by two stops: `config` builds a [`TlsSettings`] while
//! validating a module, so a bad `ca_file` is a config error, not a probe failure; the
//! probe walk (`probe::mod`, and `check` when it sniffs a port) calls [`handshake`]
//! after STARTTLS or right after connect (implicit TLS). The handshake itself only insists
//! that the server holds the key of the certificate it presents; the chain and the name are
//! then verified in full against the module's roots, and the verdict is recorded rather
//! than aborting, so the certificate can be read (expiry, names, fingerprint) even when it
//! is invalid. The walk fails the probe or not, following the module's `on_invalid_cert`.
//! A leaf that is itself one of the configured trust anchors (a private server's
//! self-signed certificate given as `ca_file`) is trusted as OpenSSL and Go trust it,
//! whether it says `CA:TRUE` or not; its name and dates are still checked. Session
//! resumption is off: every probe times a full handshake. The client configuration is
//! built once per module.
//!
//! A spec of a domain's MX may carry the MX's TLSA records (from a DNSSEC-secure answer,
//! see `dns` and `domains`): the chain is then matched against them too (`dane`), and a
//! match decides the verdict as RFC 7672 says: under DANE-EE the leaf is valid whatever
//! its names, dates and issuer; under DANE-TA the matched certificate is the trust anchor,
//! and the leaf's name and dates are checked below it.

use std::collections::{HashMap, HashSet};
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

use crate::logging::format_date;
use crate::outcome::{Reason, StepError};

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
/// `CertError::VARIANTS` lists them in documentation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CertError {
    /// Past its notAfter.
    Expired,
    /// Before its notBefore.
    NotYetValid,
    /// The chain does not lead to a trusted root.
    UnknownIssuer,
    /// The leaf signed itself and is not one of the trusted certificates.
    SelfSigned,
    /// Valid, but not for the name the probe checks.
    NameMismatch,
    /// Not usable as a TLS server certificate: a CA certificate served as the leaf, an
    /// intermediate without the CA flag, or an extended key usage without serverAuth.
    InvalidPurpose,
    /// A signature in the chain does not verify, or uses an algorithm no longer accepted.
    BadSignature,
    Revoked,
    /// Anything else (a malformed certificate, an unhandled critical extension, ...).
    Other,
}

impl CertError {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What to do about it, in the configuration's words.
    pub fn remedy(self) -> &'static str {
        match self {
            CertError::Expired => "renew it, or set on_invalid_cert: report",
            CertError::NotYetValid => "check the clocks of this machine and of the server",
            CertError::UnknownIssuer => "add the issuing CA to tls_config.ca_file, or set on_invalid_cert: report",
            CertError::SelfSigned => "trust it with tls_config.ca_file, or set on_invalid_cert: report",
            CertError::NameMismatch => {
                "set tls_config.server_name to a name it covers, or give the server a certificate for this name"
            }
            CertError::InvalidPurpose => "the server needs a certificate issued for TLS server use",
            CertError::BadSignature => "the server needs a certificate signed with a current algorithm",
            CertError::Revoked => "the server needs a new certificate",
            CertError::Other => "set on_invalid_cert: report to keep probing past it",
        }
    }

    /// Sorts a verifier error into the fixed set. `self_issued` tells a self-signed leaf
    /// from one issued by an unknown CA.
    fn from_rustls(err: &rustls::Error, self_issued: bool) -> CertError {
        let unknown = if self_issued { CertError::SelfSigned } else { CertError::UnknownIssuer };
        let rustls::Error::InvalidCertificate(e) = err else { return CertError::Other };
        match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => CertError::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertError::NotYetValid
            }
            CertificateError::UnknownIssuer => unknown,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CertError::NameMismatch
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                CertError::InvalidPurpose
            }
            CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                CertError::BadSignature
            }
            CertificateError::Revoked => CertError::Revoked,
            // webpki's own errors that rustls passes through untranslated.
            CertificateError::Other(rustls::OtherError(inner)) => match inner.downcast_ref::<webpki::Error>()
            {
                // `openssl req -x509` makes CA:TRUE certificates: self-signed, untrusted.
                Some(webpki::Error::CaUsedAsEndEntity) if self_issued => CertError::SelfSigned,
                Some(
                    webpki::Error::CaUsedAsEndEntity
                    | webpki::Error::EndEntityUsedAsCa
                    | webpki::Error::PathLenConstraintViolated,
                ) => CertError::InvalidPurpose,
                _ => CertError::Other,
            },
            _ => CertError::Other,
        }
    }
}

/// The largest CA file read (a whole system bundle is about 200 KiB).
const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// Why trust settings could not be built: the CA file or store that failed, and how. It
/// names the file, not the setting that named it, for the caller to prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupError(String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

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
    /// What is wrong, in words (without the remedy, which depends on who reads it).
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
    /// What the MX's TLSA records say of the chain, when the spec had secure ones.
    pub dane: Option<crate::dane::Outcome>,
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
    /// The DER of every configured trust anchor: a leaf found here is trusted as it is
    /// (a private server's self-signed certificate given as `ca_file`).
    anchors: HashSet<Vec<u8>>,
    /// Descriptions of chains seen before, keyed by their DER bytes: a server presents the
    /// same chain probe after probe, and parsing it again is a tenth of a probe's CPU.
    described: Mutex<HashMap<Vec<u8>, Arc<CertFields>>>,
}

/// How many distinct chains a module remembers before it starts over.
const DESCRIBED_CHAINS_MAX: usize = 1024;

/// What the presented chain says, as `TlsInfo` carries it.
#[derive(Debug, Default)]
struct CertFields {
    leaf_not_before: Option<i64>,
    leaf_not_after: Option<i64>,
    /// The leaf names itself as its issuer.
    leaf_self_issued: bool,
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

/// The trust anchors of `roots`, and the DER of each one that a leaf may match as it is
/// (none for the bundled roots: no server presents a root of the Mozilla program).
fn load_roots(roots: &Roots) -> Result<(Arc<RootCertStore>, HashSet<Vec<u8>>), SetupError> {
    match roots {
        Roots::Bundled => Ok((bundled_roots(), HashSet::new())),
        Roots::System => {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let anchors = loaded.certs.iter().map(|c| c.to_vec()).collect();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let why = loaded.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(SetupError(format!("no usable certificate in the system store{why}")));
            }
            Ok((Arc::new(store), anchors))
        }
        Roots::CaFile(path) => load_ca_file(path).map(|(store, anchors)| (Arc::new(store), anchors)),
    }
}

fn load_ca_file(path: &Path) -> Result<(RootCertStore, HashSet<Vec<u8>>), SetupError> {
    use rustls::pki_types::pem::PemObject;
    let fail = |e: &dyn fmt::Display| SetupError(format!("{}: {e}", path.display()));
    let pem = crate::files::read_bounded(path, MAX_CA_FILE_BYTES).map_err(|e| fail(&e))?;
    let mut store = RootCertStore::empty();
    let mut anchors = HashSet::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| fail(&e))?;
        anchors.insert(cert.to_vec());
        store.add(cert).map_err(|e| fail(&e))?;
    }
    if store.is_empty() {
        return Err(fail(&"no PEM certificate found"));
    }
    Ok((store, anchors))
}

impl TlsSettings {
    /// Loads the trust anchors, fixes the policy for invalid certificates, and builds the
    /// client configuration. An error names the file or store that failed, not the
    /// setting that named it: the caller knows whether that was `tls_config.ca_file` or
    /// `--ca-file`.
    pub fn new(roots: &Roots, fail_on_invalid_cert: bool) -> Result<TlsSettings, SetupError> {
        let (store, anchors) = load_roots(roots)?;
        let verifier = WebPkiServerVerifier::builder_with_provider(store, provider())
            .build()
            .map_err(|e| SetupError(e.to_string()))?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SignaturesOnly(verifier.clone())))
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Ok(TlsSettings {
            verifier,
            config: Arc::new(config),
            fail_on_invalid_cert,
            anchors,
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

    /// The verdict under a matched TLSA record (RFC 7672 §3.1): none under DANE-EE; under
    /// DANE-TA, the leaf verified up to the matched certificate as the only root, with its
    /// name and dates.
    fn dane_verdict(
        &self,
        chain: &[CertificateDer<'_>],
        anchor: usize,
        name: &ServerName<'_>,
        fields: &CertFields,
    ) -> Option<(CertError, String)> {
        if anchor == 0 {
            return None;
        }
        let mut store = RootCertStore::empty();
        let error = match store.add(chain[anchor].clone()) {
            Err(e) => e,
            Ok(()) => {
                let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()));
                let verified = verifier.and_then(|v| {
                    v.verify_server_cert(&chain[0], &chain[1..anchor], name, &[], UnixTime::now())
                });
                verified.err()?
            }
        };
        let kind = CertError::from_rustls(&error, false);
        Some((kind, explain(kind, &error, fields, name)))
    }

    /// Verifies the presented chain and name; `None` when they are valid, otherwise why
    /// not and what is wrong in words.
    fn verdict(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        name: &ServerName<'_>,
        fields: &CertFields,
    ) -> Option<(CertError, String)> {
        let Some([leaf, intermediates @ ..]) = chain else {
            return Some((CertError::Other, "the server presented no certificate".to_owned()));
        };
        let now = UnixTime::now();
        let error = if self.anchors.contains(leaf.as_ref()) {
            trusted_leaf_verdict(leaf, name, fields, now)?
        } else {
            let err = self.verifier.verify_server_cert(leaf, intermediates, name, &[], now).err()?;
            (CertError::from_rustls(&err, fields.leaf_self_issued), err)
        };
        Some((error.0, explain(error.0, &error.1, fields, name)))
    }
}

/// The verdict on a leaf that is one of the trust anchors: trusted as it is, so only its
/// dates and its name are checked.
fn trusted_leaf_verdict(
    leaf: &CertificateDer<'_>,
    name: &ServerName<'_>,
    fields: &CertFields,
    now: UnixTime,
) -> Option<(CertError, rustls::Error)> {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if fields.leaf_not_before.is_some_and(|t| now_secs < t) {
        return Some((CertError::NotYetValid, CertificateError::NotValidYet.into()));
    }
    if fields.leaf_not_after.is_some_and(|t| now_secs > t) {
        return Some((CertError::Expired, CertificateError::Expired.into()));
    }
    let covered = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| CertificateError::Other(rustls::OtherError(Arc::new(e))).into())
        .and_then(|cert| {
            cert.verify_is_valid_for_subject_name(name)
                .map_err(|_| rustls::Error::from(CertificateError::NotValidForName))
        });
    match covered {
        Ok(()) => None,
        Err(err) => Some((CertError::from_rustls(&err, false), err)),
    }
}

/// A certificate error in words, naming what the certificate says: its names, issuer and
/// dates.
fn explain(error: CertError, cause: &rustls::Error, fields: &CertFields, name: &ServerName<'_>) -> String {
    let names = if fields.leaf_names.is_empty() {
        match fields.subject_cn.as_str() {
            "" => "an unnamed subject".to_owned(),
            cn => cn.to_owned(),
        }
    } else {
        let mut shown: Vec<&str> = fields.leaf_names.iter().take(4).map(String::as_str).collect();
        if fields.leaf_names.len() > shown.len() {
            shown.push("…");
        }
        shown.join(", ")
    };
    let date = |t: Option<i64>| t.map(format_date).unwrap_or_else(|| "an unreadable date".to_owned());
    let wanted = match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    };
    match error {
        CertError::Expired => format!("certificate for {names} expired on {}", date(fields.leaf_not_after)),
        CertError::NotYetValid => {
            format!("certificate for {names} is not valid before {}", date(fields.leaf_not_before))
        }
        CertError::UnknownIssuer => format!(
            "certificate for {names} is issued by \"{}\", which is not among the trusted roots",
            fields.issuer_cn
        ),
        CertError::SelfSigned => format!("self-signed certificate for {names}"),
        CertError::NameMismatch => format!("certificate is valid for {names}, not for {wanted}"),
        CertError::InvalidPurpose => format!(
            "certificate for {names} is not for a TLS server (a CA certificate as the leaf, an intermediate that is not a CA, or no serverAuth usage)"
        ),
        CertError::BadSignature => {
            format!("certificate for {names}: a signature does not verify or uses a rejected algorithm ({cause})")
        }
        CertError::Revoked => format!("certificate for {names} is revoked"),
        CertError::Other => format!("certificate for {names} did not verify: {cause}"),
    }
}

/// Runs the TLS handshake on `stream` and describes what was negotiated. An invalid
/// certificate does not make this fail: see `TlsInfo::cert_error`. With `tlsa`, the
/// secure TLSA records of the server's name, the chain is matched against them too.
pub async fn handshake<S>(
    settings: &TlsSettings,
    server_name: ServerName<'static>,
    tlsa: Option<&crate::dns::TlsaSet>,
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
    let fields = conn.peer_certificates().map(|chain| settings.describe(chain)).unwrap_or_default();
    let dane = tlsa
        .filter(|set| set.dnssec == crate::dns::Dnssec::Secure)
        .map(|set| crate::dane::evaluate(&set.records, conn.peer_certificates().unwrap_or_default()));
    let verdict = match (conn.peer_certificates(), dane.as_ref().and_then(|d| d.anchor)) {
        (Some(chain), Some(anchor)) => settings.dane_verdict(chain, anchor, &server_name, &fields),
        _ => settings.verdict(conn.peer_certificates(), &server_name, &fields),
    };
    let (cert_error, cert_error_detail) = match verdict {
        Some((error, detail)) => (Some(error), Some(detail)),
        None => (None, None),
    };
    let info = TlsInfo {
        version,
        cipher,
        kx_group,
        cert_error,
        cert_error_detail,
        leaf_not_after: fields.leaf_not_after,
        chain_earliest_not_after: fields.chain_earliest_not_after,
        leaf_names: fields.leaf_names.clone(),
        subject_cn: fields.subject_cn.clone(),
        issuer_cn: fields.issuer_cn.clone(),
        serial: fields.serial.clone(),
        fingerprint_sha256: fields.fingerprint_sha256.clone(),
        dane,
    };
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
    info.leaf_not_before = Some(leaf.validity().not_before.timestamp());
    info.leaf_not_after = Some(leaf.validity().not_after.timestamp());
    info.leaf_self_issued = leaf.subject().as_raw() == leaf.issuer().as_raw();
    info.leaf_names = subject_alt_names(leaf);
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or("").to_owned()
    };
    info.subject_cn = cn(leaf.subject());
    info.issuer_cn = cn(leaf.issuer());
    info.serial = hex::encode(leaf.raw_serial());
    info.fingerprint_sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf_der));
    info
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
            let reason = match crate::sys::reason_of(&err) {
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

/// Short names for the signature checks' types, which rustls' traits spell out.
type Der<'a> = CertificateDer<'a>;
type Dss = DigitallySignedStruct;
type Signature = Result<HandshakeSignatureValid, rustls::Error>;

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

    fn verify_tls12_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> Signature {
        self.0.verify_tls12_signature(msg, cert, dss)
    }

    fn verify_tls13_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> Signature {
        self.0.verify_tls13_signature(msg, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: each way rustls and webpki reject a chain lands in its own class; a
    /// CA certificate as the leaf is self-signed when it issued itself, else the wrong
    /// purpose; anything else is `other`.
    #[test]
    fn verifier_errors_are_sorted_into_their_class() {
        use CertificateError as E;
        let webpki = |e: webpki::Error| E::Other(rustls::OtherError(Arc::new(e)));
        let cases = [
            (E::Expired, false, CertError::Expired),
            (E::NotValidYet, false, CertError::NotYetValid),
            (E::UnknownIssuer, false, CertError::UnknownIssuer),
            (E::UnknownIssuer, true, CertError::SelfSigned),
            (E::NotValidForName, false, CertError::NameMismatch),
            (E::InvalidPurpose, false, CertError::InvalidPurpose),
            (E::BadSignature, false, CertError::BadSignature),
            (E::Revoked, false, CertError::Revoked),
            (webpki(webpki::Error::CaUsedAsEndEntity), true, CertError::SelfSigned),
            (webpki(webpki::Error::CaUsedAsEndEntity), false, CertError::InvalidPurpose),
            (webpki(webpki::Error::EndEntityUsedAsCa), true, CertError::InvalidPurpose),
            (webpki(webpki::Error::PathLenConstraintViolated), false, CertError::InvalidPurpose),
            (webpki(webpki::Error::UnsupportedCriticalExtension), false, CertError::Other),
            (E::BadEncoding, false, CertError::Other),
        ];
        for (error, self_issued, want) in cases {
            let shown = format!("{error:?}");
            let got = CertError::from_rustls(&rustls::Error::InvalidCertificate(error), self_issued);
            assert_eq!(got, want, "{shown} (self-issued: {self_issued})");
        }
        assert_eq!(CertError::from_rustls(&rustls::Error::DecryptError, false), CertError::Other);
    }

    /// Issue 17: a leaf that is itself a trust anchor is valid from its notBefore to its
    /// notAfter, both seconds included.
    #[test]
    fn a_trusted_leaf_is_valid_on_both_of_its_dates() {
        let made = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_owned()]).unwrap();
        let leaf = made.cert.der().clone();
        let name = ServerName::try_from("mx.example.test").unwrap();
        let fields = CertFields {
            leaf_not_before: Some(1_000),
            leaf_not_after: Some(2_000),
            ..describe_chain(std::slice::from_ref(&leaf))
        };
        let at = |secs: u64| {
            trusted_leaf_verdict(
                &leaf,
                &name,
                &fields,
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            )
            .map(|(class, _)| class)
        };
        assert_eq!(at(999), Some(CertError::NotYetValid));
        assert_eq!(at(1_000), None);
        assert_eq!(at(2_000), None);
        assert_eq!(at(2_001), Some(CertError::Expired));
        let other = ServerName::try_from("other.example.test").unwrap();
        let verdict = trusted_leaf_verdict(
            &leaf,
            &other,
            &fields,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_500)),
        );
        assert_eq!(verdict.map(|(class, _)| class), Some(CertError::NameMismatch));
    }

    /// Issue 17: described chains are remembered, up to `DESCRIBED_CHAINS_MAX`; then the
    /// memory starts over.
    #[test]
    fn described_chains_are_remembered_within_their_bound() {
        let settings = TlsSettings::new(&Roots::Bundled, true).unwrap();
        let chain = |name: &str| {
            vec![rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap().cert.der().clone()]
        };
        let remembered = || settings.described.lock().unwrap().len();
        let first = chain("a.example.test");
        let described = settings.describe(&first);
        assert!(Arc::ptr_eq(&described, &settings.describe(&first)), "the second time from memory");
        settings.describe(&chain("b.example.test"));
        assert_eq!(remembered(), 2);
        let filler =
            (2..DESCRIBED_CHAINS_MAX).map(|n| (n.to_le_bytes().to_vec(), Arc::new(CertFields::default())));
        settings.described.lock().unwrap().extend(filler);
        assert_eq!(remembered(), DESCRIBED_CHAINS_MAX);
        settings.describe(&chain("c.example.test"));
        assert_eq!(remembered(), 1, "a new chain at the bound starts the memory over");
    }

    /// Issue 17: the words name the first four names of the certificate and mark the
    /// rest; with no names, the subject's common name.
    #[test]
    fn explanations_name_what_the_certificate_covers() {
        let name = ServerName::try_from("mx.example.test").unwrap();
        let cause = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let with = |names: &[&str]| CertFields {
            leaf_names: names.iter().map(|n| (*n).to_owned()).collect(),
            subject_cn: "cn.example.test".into(),
            ..CertFields::default()
        };
        let said = |fields: &CertFields| explain(CertError::SelfSigned, &cause, fields, &name);
        assert_eq!(said(&with(&["a", "b", "c", "d"])), "self-signed certificate for a, b, c, d");
        assert_eq!(said(&with(&["a", "b", "c", "d", "e"])), "self-signed certificate for a, b, c, d, …");
        assert_eq!(said(&with(&[])), "self-signed certificate for cn.example.test");
        assert_eq!(said(&CertFields::default()), "self-signed certificate for an unnamed subject");
    }

    /// Issue 17: a certificate's names are its DNS names and its IP addresses of both
    /// families, as written.
    #[test]
    fn subject_alt_names_of_both_families_are_read() {
        let params = rcgen::CertificateParams::new(vec![
            "mx.example.test".to_owned(),
            "192.0.2.25".to_owned(),
            "2001:db8::25".to_owned(),
        ])
        .unwrap();
        let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        let fields = describe_chain(&[cert.der().clone()]);
        assert_eq!(fields.leaf_names, ["mx.example.test", "192.0.2.25", "2001:db8::25"]);
    }
}
