//! The MTA-STS policy fetch: `GET https://mta-sts.<domain>/.well-known/mta-sts.txt` as
//! RFC 8461 §3.3 says: the certificate must be valid for that name, redirects are not
//! followed, the body is capped, the whole exchange has a deadline, and the answer must be
//! `200` with `text/plain`. Part of `policy`; every way it can fail is one [`StsFailure`].

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{PolicySettings, StsFailure};
use crate::dns::Resolver;
use crate::tls;

/// The largest policy read (RFC 8461 suggests 64 KiB as a limit for senders).
pub const MAX_POLICY_BYTES: usize = 64 << 10;

/// The well-known path of the policy.
const PATH: &str = "/.well-known/mta-sts.txt";

type Failed = (StsFailure, String);

/// Fetches the policy text from `host` (`mta-sts.<domain>`).
pub async fn policy(host: &str, resolver: &Resolver, settings: &PolicySettings) -> Result<String, Failed> {
    match tokio::time::timeout(settings.timeout, fetch(host, resolver, settings)).await {
        Ok(result) => result,
        Err(_) => Err((
            StsFailure::HttpsTimeout,
            format!("https://{host}{PATH}: no complete answer within {:?}", settings.timeout),
        )),
    }
}

async fn fetch(host: &str, resolver: &Resolver, settings: &PolicySettings) -> Result<String, Failed> {
    let url = format!("https://{host}{PATH}");
    let connect = |detail: String| (StsFailure::HttpsConnect, format!("{url}: {detail}"));
    let ip =
        resolver.first_address(host, None).await.map_err(|e| connect(format!("resolving {}", e.detail)))?;
    let tcp = TcpStream::connect((ip, settings.port))
        .await
        .map_err(|e| connect(format!("{ip}:{}: {e}", settings.port)))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| connect(format!("{host:?} is not a valid name")))?;
    let (stream, info) = tls::handshake(&settings.tls, name, None, tcp)
        .await
        .map_err(|e| (StsFailure::HttpsTls, format!("{url}: TLS handshake: {}", e.detail)))?;
    if let Some(error) = info.cert_error {
        let detail = info.cert_error_detail.unwrap_or_default();
        return Err((
            StsFailure::HttpsCertInvalid,
            format!("{url}: certificate {}: {detail}", error.as_str()),
        ));
    }
    let protocol = |e: hyper::Error| (StsFailure::HttpsProtocol, format!("{url}: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(protocol)?;
    // The connection is driven beside the request, and dropped with it.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let _abort = AbortOnDrop(driver);
    let request = hyper::Request::get(PATH)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, concat!("smtp_exporter/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .expect("a request from constant parts");
    let response = sender.send_request(request).await.map_err(protocol)?;
    let status = response.status();
    if status.is_redirection() {
        let location =
            response.headers().get(hyper::header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("");
        return Err((
            StsFailure::HttpsRedirect,
            format!("{url}: {status} to {location:?}; RFC 8461 forbids following redirects"),
        ));
    }
    if status != hyper::StatusCode::OK {
        return Err((StsFailure::HttpsStatus, format!("{url}: {status}")));
    }
    let media_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if media_type.as_deref() != Some("text/plain") {
        return Err((
            StsFailure::HttpsContentType,
            format!("{url}: Content-Type {:?}, not text/plain", media_type.unwrap_or_default()),
        ));
    }
    let body = Limited::new(response.into_body(), MAX_POLICY_BYTES).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            (StsFailure::HttpsTooLarge, format!("{url}: the policy is larger than {MAX_POLICY_BYTES} bytes"))
        } else {
            (StsFailure::HttpsProtocol, format!("{url}: {e}"))
        }
    })?;
    String::from_utf8(body.to_bytes().to_vec())
        .map_err(|_| (StsFailure::PolicyMalformed, format!("{url}: the policy is not UTF-8")))
}

/// Aborts the connection's task when the fetch ends, whichever way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
