//! Certificates generated at test time: a CA, a server certificate for localhost and
//! 127.0.0.1 signed by it, and the CA's PEM file for a module's `ca_file`; and a TLS
//! acceptor for certificates made elsewhere, from their PEM files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A private PKI for one test.
pub struct TestPki {
    /// PEM file of the CA that signed the server certificate.
    pub ca_file: PathBuf,
    /// PEM file of an unrelated CA (verification against it must fail).
    pub other_ca_file: PathBuf,
    /// The DER of the certificate the server presents, and of the CA (the same for a
    /// self-signed leaf): what a TLSA record names.
    pub leaf_der: Vec<u8>,
    pub ca_der: Vec<u8>,
    server_config: Arc<rustls::ServerConfig>,
    dir: PathBuf,
}

fn new_ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed CA");
    (params, key, cert.pem())
}

/// How the server certificate is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// Valid for localhost and 127.0.0.1, for many years.
    Good,
    /// Valid names, but expired in 2021.
    Expired,
    /// Self-signed for localhost, marked `CA:TRUE`, as `openssl req -x509` makes it; the
    /// "CA file" is the certificate itself.
    SelfSignedCa,
    /// Self-signed for localhost with `CA:FALSE`; the "CA file" is the certificate itself.
    SelfSignedNoCa,
    /// Self-signed, `CA:TRUE`, expired in 2021; the "CA file" is the certificate itself.
    SelfSignedExpired,
}

impl TestPki {
    pub fn new() -> TestPki {
        TestPki::with_leaf(Leaf::Good)
    }

    pub fn with_leaf(kind: Leaf) -> TestPki {
        TestPki::build(kind, &["localhost", "127.0.0.1"])
    }

    /// A good leaf for `names` (the first is its common name), signed by the CA.
    pub fn with_names(names: &[&str]) -> TestPki {
        TestPki::build(Leaf::Good, names)
    }

    /// A good leaf whose server presents the CA above it too (as DANE-TA needs).
    pub fn with_ca_in_chain() -> TestPki {
        TestPki::build_with(Leaf::Good, &["localhost", "127.0.0.1"], true)
    }

    fn build(kind: Leaf, names: &[&str]) -> TestPki {
        TestPki::build_with(kind, names, false)
    }

    fn build_with(kind: Leaf, names: &[&str], present_ca: bool) -> TestPki {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "smtp-exporter-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let (ca_params, ca_key, mut ca_pem) = new_ca("smtp_exporter test CA");
        let mut ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM").to_vec();
        let (_, _, other_pem) = new_ca("some other CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf_params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        leaf_params.distinguished_name.push(DnType::CommonName, names[0]);
        if matches!(kind, Leaf::Expired | Leaf::SelfSignedExpired) {
            leaf_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            leaf_params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let leaf = match kind {
            Leaf::Good | Leaf::Expired => leaf_params.signed_by(&leaf_key, &issuer).expect("leaf cert"),
            Leaf::SelfSignedCa | Leaf::SelfSignedNoCa | Leaf::SelfSignedExpired => {
                leaf_params.is_ca = match kind {
                    Leaf::SelfSignedNoCa => IsCa::ExplicitNoCa,
                    _ => IsCa::Ca(BasicConstraints::Unconstrained),
                };
                let cert = leaf_params.self_signed(&leaf_key).expect("self-signed leaf");
                ca_pem = cert.pem();
                ca_der = cert.der().to_vec();
                cert
            }
        };

        let ca_file = dir.join("ca.pem");
        let other_ca_file = dir.join("other-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        std::fs::write(&other_ca_file, other_pem).unwrap();

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
        if present_ca {
            chain.push(CertificateDer::from(ca_der.clone()));
        }
        let server_config = server_config(chain, key).expect("server config");
        TestPki {
            ca_file,
            other_ca_file,
            leaf_der: leaf.der().to_vec(),
            ca_der,
            server_config: Arc::new(server_config),
            dir,
        }
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config.clone())
    }
}

/// A TLS acceptor that serves the certificate chain and the private key of two PEM files:
/// for a server whose certificates were made elsewhere (the bench makes them with openssl,
/// RSA 2048 by default, as most mail servers present).
pub fn acceptor_from_pem_files(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("private key {}: {e}", key.display()))?;
    let config = server_config(chain, key).map_err(|e| format!("server certificate: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A server configuration (ring, TLS 1.2 and 1.3, no client certificates) for one chain.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
}

impl Default for TestPki {
    fn default() -> TestPki {
        TestPki::new()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
