//! TLS for the probe: building a client configuration once, and the handshake itself.
//!
//! `config` calls [`client_config`] while validating a module, so a bad `ca_file` is a config
//! error, not a probe failure. The probe walk (`probe::mod`) calls [`handshake`] after
//! STARTTLS or right after connect (implicit TLS) and keeps the [`TlsInfo`] it returns in
//! the `ProbeReport`. Session resumption is off: every probe times a full handshake.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
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

/// What a completed handshake negotiated, and the leaf certificate's validity end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLS1.2` or `TLS1.3`.
    pub version: String,
    /// The IANA name of the cipher suite.
    pub cipher: String,
    /// The leaf certificate's notAfter, in seconds since the Unix epoch.
    pub leaf_not_after: Option<i64>,
    /// The leaf certificate's subject alternative names (DNS names and IP addresses).
    pub leaf_names: Vec<String>,
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
                return Err(format!("no usable certificate in the system store{why}"));
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

/// Builds the client configuration for a module. With `insecure_skip_verify`, the chain and
/// name are not checked (handshake signatures still are).
pub fn client_config(roots: &Roots, insecure_skip_verify: bool) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(load_roots(roots)?).with_no_client_auth()
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Runs the TLS handshake on `stream` and describes what was negotiated.
pub async fn handshake<S>(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    stream: S,
) -> Result<(TlsStream<S>, TlsInfo), StepError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = TlsConnector::from(config).connect(server_name, stream).await.map_err(classify)?;
    let conn = tls.get_ref().1;
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher =
        conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown").to_owned();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok());
    let leaf_not_after = leaf.as_ref().map(|(_, cert)| cert.validity().not_after.timestamp());
    let leaf_names = leaf.as_ref().map(|(_, cert)| subject_alt_names(cert)).unwrap_or_default();
    Ok((tls, TlsInfo { version, cipher, leaf_not_after, leaf_names }))
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

/// Splits handshake errors into "the certificate is bad" and "the handshake failed".
fn classify(err: std::io::Error) -> StepError {
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(cert_err)) => {
            StepError::new(Reason::TlsCertInvalid, format!("certificate rejected: {cert_err:?}"))
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

/// Accepts any certificate chain and name (for `insecure_skip_verify`), but still checks
/// that the server holds the key it presents.
struct NoVerification(Arc<CryptoProvider>);

impl fmt::Debug for NoVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerification")
    }
}

impl ServerCertVerifier for NoVerification {
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
