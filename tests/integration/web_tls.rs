//! The web configuration's TLS settings (`--web.config.file`, `tls_server_config`) against
//! the exporter in-process: protocol versions, cipher suites, curves, client certificates
//! and `client_allowed_sans`, each seen from a rustls client that offers only what the
//! test says, with certificates generated at test time.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::SupportedKxGroup;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};
use smtp_exporter::app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::InProcess;

const NOTHING_SCHEDULED: &str =
    "modules:\n  m: { tls: none }\nprobe_endpoint: { allowed_hosts: [\"*.example.test\"] }\n";
const REQUEST: &[u8] = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// A client certificate and its key.
struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    fn new(params: CertificateParams, issuer: Option<&Issuer<'_, KeyPair>>) -> Identity {
        let key = KeyPair::generate().expect("key");
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer),
            None => params.self_signed(&key),
        }
        .expect("certificate");
        Identity { cert: cert.der().clone(), key: PrivateKeyDer::Pkcs8(key.serialize_der().into()) }
    }

    /// Signed by `issuer`, naming `sans`.
    fn signed(issuer: &Issuer<'_, KeyPair>, sans: Vec<SanType>) -> Identity {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        Identity::new(params, Some(issuer))
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("IA5 name"))
}

/// One test's certificates, in a directory of their own beside its web configurations.
struct Pki {
    dir: PathBuf,
    roots: Arc<RootCertStore>,
    monitor: Identity,
    other: Identity,
    ipv4: Identity,
    ipv6: Identity,
    email: Identity,
    uri: Identity,
    self_signed: Identity,
    files: Cell<u32>,
}

impl Pki {
    fn new() -> Pki {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("smtp-exporter-web-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Not the leaves' default name, so that a self-signed leaf has an unknown issuer.
        ca.distinguished_name.push(DnType::CommonName, "web_tls test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
        let server = server.signed_by(&server_key, &issuer).expect("server certificate");
        for (name, text) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server.pem()),
            ("server.key", server_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), text).expect("PEM file");
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("CA as root");
        let email = SanType::Rfc822Name("ops@example.test".try_into().expect("IA5"));
        let uri = SanType::URI("spiffe://example.test/monitor".try_into().expect("IA5"));
        let self_signed = CertificateParams::new(vec!["monitor.example.test".to_owned()]).unwrap();
        let self_signed = Identity::new(self_signed, None);
        Pki {
            dir,
            roots: Arc::new(roots),
            monitor: Identity::signed(&issuer, vec![dns("monitor.example.test")]),
            other: Identity::signed(&issuer, vec![dns("other.example.test")]),
            ipv4: Identity::signed(&issuer, vec![SanType::IpAddress([192, 0, 2, 7].into())]),
            ipv6: Identity::signed(&issuer, vec![SanType::IpAddress("2001:db8::7".parse().unwrap())]),
            email: Identity::signed(&issuer, vec![email]),
            uri: Identity::signed(&issuer, vec![uri]),
            self_signed,
            files: Cell::new(0),
        }
    }

    /// Writes a web configuration serving the CA-signed certificate for 127.0.0.1, with
    /// `lines` added to its `tls_server_config`.
    fn web_config(&self, lines: &[&str]) -> PathBuf {
        self.files.set(self.files.get() + 1);
        let path = self.dir.join(format!("web-{}.yml", self.files.get()));
        let extra: String = lines.iter().map(|l| format!("  {l}\n")).collect();
        let text = format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}");
        std::fs::write(&path, text).expect("web config");
        path
    }

    /// The exporter, with nothing scheduled (only `/probe` allowed), behind that web
    /// configuration.
    async fn start(&self, lines: &[&str]) -> InProcess {
        let options = app::Options { web_config_file: Some(self.web_config(lines)), ..Default::default() };
        InProcess::start_with(NOTHING_SCHEDULED.into(), "web_tls.yml", options).await
    }

    /// What `--config.check` says of that web configuration, after the file's name and
    /// `tls_server_config: `; `Ok` when it is valid.
    fn check(&self, lines: &[&str]) -> Result<(), String> {
        let path = self.web_config(lines);
        let prefix = format!("{}: tls_server_config: ", path.display());
        app::check_web_config(&path).map_err(|e| {
            e.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{e:?} does not start with {prefix:?}"))
                .to_owned()
        })
    }

    /// `GET /-/healthy` through TLS as `offer` says.
    async fn request(&self, addr: SocketAddr, offer: &Offer<'_>) -> Answer {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suite) = offer.suite {
            provider.cipher_suites = vec![suite];
        }
        if let Some(group) = offer.group {
            provider.kx_groups = vec![group];
        }
        let versions = offer.version.map_or(vec![&TLS12, &TLS13], |v| vec![v]);
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)
            .expect("client versions")
            .with_root_certificates(self.roots.clone());
        let config = match offer.cert {
            Some(id) => builder.with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key()).unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let exchange = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            let server = ServerName::try_from("127.0.0.1").expect("IP name");
            let mut tls = connector.connect(server, tcp).await.map_err(|e| format!("handshake: {e}"))?;
            tls.write_all(REQUEST).await.map_err(|e| format!("write: {e}"))?;
            let mut answer = Vec::new();
            // A read error after an answer (a close without close_notify) keeps the answer.
            let read = tls.read_to_end(&mut answer).await;
            match (answer.is_empty(), read) {
                (true, Err(e)) => Err(format!("read: {e}")),
                (true, Ok(_)) => Err("no answer".to_owned()),
                (false, _) => Ok(String::from_utf8_lossy(&answer).into_owned()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Err(_) => Answer::Other("nothing, not even a close, within 10 s".into()),
            Ok(Err(why)) => Answer::Refused(why),
            Ok(Ok(text)) if text.starts_with("HTTP/1.1 200") => Answer::Served,
            Ok(Ok(text)) => Answer::Other(text),
        }
    }

    async fn assert_served(&self, addr: SocketAddr, offer: Offer<'_>, what: &str) {
        assert_eq!(self.request(addr, &offer).await, Answer::Served, "{what}");
    }

    async fn assert_refused(&self, addr: SocketAddr, offer: Offer<'_>, what: &str) {
        let answer = self.request(addr, &offer).await;
        assert!(matches!(answer, Answer::Refused(_)), "{what}: {answer:?}");
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a request through TLS ended.
#[derive(Debug, PartialEq)]
enum Answer {
    /// `HTTP/1.1 200`.
    Served,
    /// The handshake, the write or the read failed, or the connection closed unanswered.
    Refused(String),
    /// Anything else.
    Other(String),
}

/// What a client offers: ring's defaults (TLS 1.2 and 1.3, no certificate) unless narrowed.
#[derive(Default)]
struct Offer<'a> {
    version: Option<&'static SupportedProtocolVersion>,
    suite: Option<SupportedCipherSuite>,
    group: Option<&'static dyn SupportedKxGroup>,
    cert: Option<&'a Identity>,
}

fn any<'a>() -> Offer<'a> {
    Offer::default()
}

fn only(version: &'static SupportedProtocolVersion) -> Offer<'static> {
    Offer { version: Some(version), ..Offer::default() }
}

/// TLS 1.2 with this one suite.
fn tls12_suite(suite: SupportedCipherSuite) -> Offer<'static> {
    Offer { version: Some(&TLS12), suite: Some(suite), ..Offer::default() }
}

fn group(group: &'static dyn SupportedKxGroup) -> Offer<'static> {
    Offer { group: Some(group), ..Offer::default() }
}

fn cert(identity: &Identity) -> Offer<'_> {
    Offer { cert: Some(identity), ..Offer::default() }
}

/// Issue 17: a `tls_server_config` makes the port speak TLS, and only TLS: plain HTTP to
/// it gets no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_and_plain_http_to_the_tls_port_is_not() {
    let pki = Pki::new();
    let exporter = pki.start(&[]).await;
    pki.assert_served(exporter.addr, any(), "TLS, defaults").await;
    pki.assert_served(exporter.addr, cert(&pki.other), "an unasked certificate is ignored").await;
    let mut plain = TcpStream::connect(exporter.addr).await.unwrap();
    plain.write_all(REQUEST).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP: {}", String::from_utf8_lossy(&answer));
    exporter.stop().await;
}

/// Issue 17: `min_version` and `max_version` bound the protocol versions a client may use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_and_max_version_bound_the_protocol() {
    let pki = Pki::new();
    let tls13 = pki.start(&["min_version: TLS13"]).await;
    pki.assert_refused(tls13.addr, only(&TLS12), "TLS 1.2 below min_version TLS13").await;
    pki.assert_served(tls13.addr, only(&TLS13), "TLS 1.3 at min_version TLS13").await;
    let tls12 = pki.start(&["max_version: TLS12"]).await;
    pki.assert_refused(tls12.addr, only(&TLS13), "TLS 1.3 above max_version TLS12").await;
    pki.assert_served(tls12.addr, only(&TLS12), "TLS 1.2 at max_version TLS12").await;
    tls13.stop().await;
    tls12.stop().await;
}

/// Issue 17: versions rustls lacks, unknown names and a minimum above the maximum are
/// configuration errors that name the field.
#[test]
fn unsupported_unknown_or_crossed_versions_are_config_errors() {
    let pki = Pki::new();
    for (lines, want) in [
        (&["min_version: TLS11"][..], "min_version: TLS11 is not supported (TLS12 or TLS13)"),
        (&["max_version: TLS10"], "max_version: TLS10 is not supported (TLS12 or TLS13)"),
        (&["min_version: TLS14"], "min_version: unknown version \"TLS14\" (TLS12 or TLS13)"),
        (&["max_version: SSL30"], "max_version: unknown version \"SSL30\" (TLS12 or TLS13)"),
        (&["min_version: TLS13", "max_version: TLS12"], "min_version is above max_version"),
    ] {
        assert_eq!(pki.check(lines), Err(want.to_owned()), "{lines:?}");
    }
    assert_eq!(pki.check(&["min_version: TLS12", "max_version: TLS12"]), Ok(()));
}

/// Issue 17: `cipher_suites` (Go's names, any case) limits the TLS 1.2 suites, leaves TLS
/// 1.3 alone as the toolkit does, and an unknown name is an error naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipher_suites_limit_tls12_and_leave_tls13_alone() {
    let pki = Pki::new();
    let exporter = pki.start(&["cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]"]).await;
    let listed = tls12_suite(cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    pki.assert_served(exporter.addr, listed, "the listed TLS 1.2 suite").await;
    let unlisted = tls12_suite(cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    pki.assert_refused(exporter.addr, unlisted, "an unlisted TLS 1.2 suite").await;
    pki.assert_served(exporter.addr, only(&TLS13), "TLS 1.3 keeps its suites").await;
    exporter.stop().await;
    assert_eq!(pki.check(&["cipher_suites: [tls_ecdhe_ecdsa_with_chacha20_poly1305_sha256]"]), Ok(()));
    assert_eq!(
        pki.check(&["cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]"]),
        Err("cipher_suites: \"TLS_RSA_WITH_RC4_128_SHA\" is not one rustls offers".to_owned())
    );
}

/// Issue 17: `curve_preferences` limits the key exchange groups, each of Go's names
/// standing for its group, and an unknown name is an error naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curve_preferences_limit_the_key_exchange_groups() {
    let pki = Pki::new();
    let (x25519, p256, p384) = (kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1);
    for (name, served, refused) in
        [("CurveP384", p384, x25519), ("X25519", x25519, p256), ("CurveP256", p256, x25519)]
    {
        let exporter = pki.start(&[&format!("curve_preferences: [{name}]")]).await;
        pki.assert_served(exporter.addr, group(served), &format!("{name}: {served:?}")).await;
        pki.assert_refused(exporter.addr, group(refused), &format!("{name}: {refused:?}")).await;
        exporter.stop().await;
    }
    assert_eq!(
        pki.check(&["curve_preferences: [CurveP521]"]),
        Err("curve_preferences: \"CurveP521\" is not one rustls offers".to_owned())
    );
}

/// Issue 17: the verifying `client_auth_type`s take only certificates the
/// `client_ca_file` signed; `VerifyClientCertIfGiven` also takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifying_client_auth_types_take_certificates_the_client_ca_signed() {
    let pki = Pki::new();
    let ca = "client_ca_file: ca.pem";
    let required = pki.start(&["client_auth_type: RequireAndVerifyClientCert", ca]).await;
    pki.assert_refused(required.addr, any(), "required, none given").await;
    pki.assert_served(required.addr, cert(&pki.monitor), "required, CA-signed").await;
    pki.assert_refused(required.addr, cert(&pki.self_signed), "required, self-signed").await;
    let if_given = pki.start(&["client_auth_type: VerifyClientCertIfGiven", ca]).await;
    pki.assert_served(if_given.addr, any(), "if given, none given").await;
    pki.assert_refused(if_given.addr, cert(&pki.self_signed), "if given, self-signed").await;
    pki.assert_served(if_given.addr, cert(&pki.monitor), "if given, CA-signed").await;
    required.stop().await;
    if_given.stop().await;
}

/// Issue 17: `RequireAnyClientCert` (or its older name `RequireClientCert`, which the
/// toolkit still reads) and `RequestClientCert` ask for a certificate without verifying
/// it; only the first insists on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_client_auth_types_ask_for_any_certificate() {
    let pki = Pki::new();
    let required = pki.start(&["client_auth_type: RequireAnyClientCert"]).await;
    pki.assert_refused(required.addr, any(), "required, none given").await;
    pki.assert_served(required.addr, cert(&pki.self_signed), "required, self-signed").await;
    let requested = pki.start(&["client_auth_type: RequestClientCert"]).await;
    pki.assert_served(requested.addr, any(), "requested, none given").await;
    pki.assert_served(requested.addr, cert(&pki.self_signed), "requested, self-signed").await;
    let old_name = pki.start(&["client_auth_type: RequireClientCert"]).await;
    pki.assert_refused(old_name.addr, any(), "required by the old name, none given").await;
    pki.assert_served(old_name.addr, cert(&pki.self_signed), "required by the old name, self-signed").await;
    required.stop().await;
    requested.stop().await;
    old_name.stop().await;
}

/// Issue 17: `client_auth_type` and `client_ca_file` must agree, and an unknown kind is
/// an error naming the field.
#[test]
fn client_auth_type_and_client_ca_file_must_agree() {
    let pki = Pki::new();
    let no_policy = Err("client_ca_file is set but client_auth_type is NoClientCert".to_owned());
    assert_eq!(pki.check(&["client_auth_type: NoClientCert", "client_ca_file: ca.pem"]), no_policy);
    assert_eq!(pki.check(&["client_ca_file: ca.pem"]), no_policy, "unset means NoClientCert");
    for kind in ["RequireAndVerifyClientCert", "VerifyClientCertIfGiven"] {
        let want = format!("client_auth_type {kind} needs a client_ca_file");
        assert_eq!(pki.check(&[&format!("client_auth_type: {kind}")]), Err(want));
    }
    let err = pki.check(&["client_auth_type: VerifyClientCert"]).unwrap_err();
    assert!(err.starts_with("client_auth_type: unknown value \"VerifyClientCert\""), "{err}");
}

/// Issue 17: with `client_allowed_sans`, a verified client certificate is served only when
/// one of its DNS, IP (v4 or v6), email or URI names is listed; another one completes TLS
/// but gets no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_allowed_sans_admit_only_certificates_naming_one() {
    let pki = Pki::new();
    let exporter = pki
        .start(&[
            "client_auth_type: RequireAndVerifyClientCert",
            "client_ca_file: ca.pem",
            "client_allowed_sans: [monitor.example.test, 192.0.2.7, '2001:db8::7', ops@example.test, 'spiffe://example.test/monitor']",
        ])
        .await;
    let addr = exporter.addr;
    pki.assert_served(addr, cert(&pki.monitor), "DNS name listed").await;
    pki.assert_refused(addr, cert(&pki.other), "DNS name not listed").await;
    pki.assert_served(addr, cert(&pki.ipv4), "IPv4 address listed").await;
    pki.assert_served(addr, cert(&pki.ipv6), "IPv6 address listed").await;
    pki.assert_served(addr, cert(&pki.email), "email address listed").await;
    pki.assert_served(addr, cert(&pki.uri), "URI listed").await;
    exporter.stop().await;
}

/// Issue 17: `client_allowed_sans` without a `client_auth_type` that asks for a
/// certificate is a configuration error, not a list silently ignored. Issue 26: nor with
/// one that asks without verifying: any self-signed certificate could name the SAN.
#[test]
fn client_allowed_sans_need_a_client_auth_type_that_asks_and_verifies() {
    let pki = Pki::new();
    let sans = "client_allowed_sans: [monitor.example.test]";
    let want = Err("client_allowed_sans needs a client_auth_type that asks for a certificate".to_owned());
    assert_eq!(pki.check(&["client_auth_type: NoClientCert", sans]), want);
    assert_eq!(pki.check(&[sans]), want, "unset means NoClientCert");
    for kind in ["RequestClientCert", "RequireAnyClientCert", "RequireClientCert"] {
        let want = Err(format!(
            "client_allowed_sans needs verified certificates (client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven, with client_ca_file): under {kind} any self-signed certificate can name an allowed SAN"
        ));
        assert_eq!(pki.check(&[&format!("client_auth_type: {kind}"), sans]), want, "{kind}");
    }
}
