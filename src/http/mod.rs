//! The HTTP server: `/metrics`, `/probe`, `/`, `/config`, `/-/healthy`, `/-/ready` and
//! `/-/reload`, under `--web.route-prefix` (see `paths`).
//!
//! Last stop of the data flow. hyper 1, HTTP/1.1 only, with a header read timeout so a
//! client that never finishes its request cannot hold a connection forever, and a cap on
//! open connections. Handlers read what they share ([`Shared`]); the only one that changes
//! anything is `/-/reload`, which asks the application loop (`app`) to reload and waits
//! for its answer. `status` renders the page at `/`; `body` streams `/metrics`, gzipped
//! when the client accepts it (Prometheus does; the text compresses about tenfold).

mod body;
mod conn;
mod hosts;
pub mod paths;
mod render;
pub mod status;
pub mod web;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};
use crate::metrics::{self, Exporter};
use crate::probe;
use body::Body;
pub use conn::MAX_CONNECTIONS;
use conn::{Connections, Slot};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A reload request: the answer comes back on the oneshot.
pub type ReloadRequest = oneshot::Sender<Result<(), ConfigError>>;

/// How long an on-demand probe waits for a free `max_concurrency` permit.
const PROBE_PERMIT_WAIT: Duration = Duration::from_secs(1);

/// Time kept back from Prometheus' scrape timeout for encoding and transfer.
const SCRAPE_TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// What every handler shares: the exporter, the configuration in force, the way to ask
/// for a reload, and the web configuration.
pub struct Shared {
    pub exporter: Arc<Exporter>,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The configuration in force; `app` swaps it on reload.
    pub config: std::sync::RwLock<Arc<Config>>,
    /// TLS, basic authentication and headers (`--web.config.file`).
    pub web: Arc<web::WebSettings>,
    /// `POST /-/reload` is served (`--web.enable-lifecycle`); SIGHUP always is.
    pub enable_lifecycle: bool,
    /// The `/metrics` renders under way.
    pub renders: Arc<render::Renders>,
    /// Where the pages are, and how links to them are written.
    pub paths: paths::Paths,
    /// The probes running at once, on-demand and scheduled: the scheduler's
    /// `max_concurrency` permits.
    pub probe_limit: Arc<tokio::sync::Semaphore>,
}

/// Serves until `shutdown` resolves. Connections in progress are not waited for.
pub async fn serve(listener: TcpListener, state: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Connections::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        // Responses leave as they are written: the last, partial segment of a streamed
        // exposition would otherwise wait for the client's delayed ACK (40 ms on Linux).
        let _ = stream.set_nodelay(true);
        // Every slot answering a request at its client's pace: this one waits its turn
        // by going away (its client retries), rather than queueing unseen.
        let Some(slot) = connections.admit(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "no connection can give way; closing a new one");
            continue;
        };
        tokio::spawn(serve_connection(stream, slot, state.clone()));
    }
}

/// Serves one connection until it ends, its slot is taken, or a write stalls: through TLS
/// first when the web configuration says so.
async fn serve_connection(stream: tokio::net::TcpStream, slot: Arc<Slot>, state: Arc<Shared>) {
    let config = state.web.current();
    let Some(tls) = config.tls.clone() else {
        return serve_http(slot.guard(stream), slot, state).await;
    };
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    let tls_stream = tokio::select! {
        accepted = tokio::time::timeout(HEADER_READ_TIMEOUT, accept) => match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake took too long"),
        },
        _ = slot.cancel.cancelled() => return,
    };
    if !config.client_allowed_sans.is_empty()
        && !web::client_san_allowed(tls_stream.get_ref().1.peer_certificates(), &config.client_allowed_sans)
    {
        return tracing::debug!("client certificate names none of client_allowed_sans");
    }
    serve_http(slot.guard(tls_stream), slot, state).await
}

async fn serve_http<S>(io: conn::StallGuard<S>, slot: Arc<Slot>, state: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_slot = slot.clone();
    let service = service_fn(move |req| {
        let (state, slot) = (state.clone(), service_slot.clone());
        async move {
            slot.busy();
            Ok::<_, Infallible>(handle(&state, &slot, req).await.map(|body| body.for_slot(slot)))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        _ = slot.cancel.cancelled() => tracing::debug!("connection closed to make room for another"),
    }
}

/// Authenticates the request (when the web configuration has users), routes it, and adds
/// the configured headers.
async fn handle(state: &Shared, slot: &Slot, req: Request<Incoming>) -> Response<Body> {
    let config = state.web.current();
    let on_wait = || slot.doing(conn::Activity::Authenticating);
    let mut response = match state
        .web
        .authorize(&config, req.headers().get(hyper::header::AUTHORIZATION), slot.peer, on_wait)
        .await
    {
        web::Access::Granted => {
            slot.busy();
            route(state, slot, req).await
        }
        web::Access::Busy => {
            let mut resp =
                text(StatusCode::TOO_MANY_REQUESTS, "Too many password checks are waiting; try again.\n");
            resp.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        web::Access::Denied => {
            let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized.\n");
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"smtp_exporter\""),
            );
            // Requests pipelined behind a wrong password wait for nothing: the
            // connection ends with this answer, and its slot is free.
            resp.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    };
    for (name, value) in &config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

async fn route(state: &Shared, slot: &Slot, req: Request<Incoming>) -> Response<Body> {
    use paths::Page;
    let Some(page) = state.paths.page(req.uri().path()) else {
        let home = state.paths.link(Page::Status);
        return text(StatusCode::NOT_FOUND, &format!("Not found. See {home} for the available pages.\n"));
    };
    let method = req.method();
    let read_only = method == Method::GET || method == Method::HEAD;
    let debug_probe = page == Page::Probe
        && query_params(req.uri().query().unwrap_or(""))
            .iter()
            .any(|(k, v)| k == "debug" && (v == "true" || v == "1"));
    let guarded = matches!(page, Page::Reload | Page::Config | Page::Transcript) || debug_probe;
    if guarded && !hosts::allowed(req.headers().get(hyper::header::HOST), &state.paths.allowed_hosts) {
        return text(
            StatusCode::FORBIDDEN,
            "This page answers only to the exporter's address, localhost, the host of --web.external-url, or a name given with --web.allowed-host (a guard against DNS rebinding).\n",
        );
    }
    match page {
        Page::Metrics if read_only => metrics_response(state, &req),
        Page::Probe if read_only => {
            slot.doing(conn::Activity::Probing);
            on_demand_probe(state, &req).await
        }
        Page::Status if read_only => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Body::whole(status::render(
                &state.exporter.store,
                &state.exporter.resolutions.snapshot(),
                &state.paths,
            )),
        ),
        Page::Config if read_only => {
            let config = state.config.read().expect("config lock").clone();
            respond(StatusCode::OK, "text/plain; charset=utf-8", Body::whole(config.shown()))
        }
        Page::Transcript if read_only => last_failure_transcript(state, &req),
        Page::History if read_only => respond(
            StatusCode::OK,
            "application/json",
            Body::whole(history_json(&state.exporter.store, req.uri().query().unwrap_or(""))),
        ),
        Page::Healthy if read_only => text(StatusCode::OK, "Healthy.\n"),
        Page::Ready if read_only => {
            if state.exporter.store.all_probed() {
                text(StatusCode::OK, "Ready.\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not ready: some probe specs have not completed their first probe.\n",
                )
            }
        }
        Page::Reload if method == Method::POST || method == Method::PUT => {
            lifecycle_reload(state, &req).await
        }
        Page::Reload => method_not_allowed("POST, PUT"),
        _ => method_not_allowed("GET, HEAD"),
    }
}

/// `/metrics`: rendered off the runtime's workers (a large exposition takes long enough to
/// delay the probes running beside it, and their timings with them), a few at a time, and
/// streamed in chunks as it is written.
fn metrics_response(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let gzip = accepts_gzip(req.headers().get_all(hyper::header::ACCEPT_ENCODING));
    let body = state.renders.metrics_body(state.exporter.clone(), gzip);
    let mut response = respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body);
    let headers = response.headers_mut();
    headers.insert(hyper::header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(hyper::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a weight above zero.
fn accepts_gzip(values: hyper::header::GetAll<'_, HeaderValue>) -> bool {
    values.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && weight > 0.0
    })
}

/// `/probe?target=HOST:PORT&module=NAME`: one probe now, answered with its series only.
async fn on_demand_probe(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let config = state.config.read().expect("config lock").clone();
    if !config.probe_endpoint.enabled {
        return text(
            StatusCode::NOT_FOUND,
            "The /probe endpoint is disabled (probe_endpoint.enabled: false).\n",
        );
    }
    let params = query_params(req.uri().query().unwrap_or(""));
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(module) = param("module") else {
        return text(StatusCode::BAD_REQUEST, "module parameter is missing\n");
    };
    let Some(target) = param("target") else {
        return text(StatusCode::BAD_REQUEST, "target parameter is missing (target=HOST:PORT)\n");
    };
    let (host, port) = match split_target(target) {
        Ok(hp) => hp,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("target {target:?}: {e}\n")),
    };
    if !config.probe_allowed(&host) {
        return text(
            StatusCode::FORBIDDEN,
            &format!("target host {host:?} is not allowed: list it under targets or probe_endpoint.allowed_hosts\n"),
        );
    }
    let scrape_timeout = req
        .headers()
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| {
            Duration::from_secs_f64(t).saturating_sub(SCRAPE_TIMEOUT_MARGIN).max(Duration::from_millis(100))
        });
    let spec = match config.on_demand_spec(&host, port, module, scrape_timeout) {
        Ok(spec) => spec,
        Err(e @ crate::config::OnDemandError::Credentials) => {
            return text(StatusCode::FORBIDDEN, &format!("module {module:?}: {e}\n"))
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    // Outbound connections obey max_concurrency like scheduled probes: a probe waits a
    // moment for a permit, then is answered 503.
    let permit =
        match tokio::time::timeout(PROBE_PERMIT_WAIT, state.probe_limit.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Every probe slot (max_concurrency) is busy; try again.\n",
                )
            }
        };
    let debug = matches!(param("debug"), Some("true" | "1"));
    let report = if debug { probe::run_recorded(&spec).await } else { probe::run(&spec).await };
    drop(permit);
    if let Some(f) = report.failure.as_ref().filter(|f| f.reason == probe::Reason::LocalResources) {
        tracing::warn!(detail = %f.detail, "on-demand probe could not run: the exporter is out of resources");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The exporter is out of resources (file descriptors or memory) and could not probe; this says nothing about the target.\n",
        );
    }
    if let Some(f) = &report.failure {
        tracing::debug!(target = %host, port, module, phase = f.phase.as_str(), reason = f.reason.as_str(), detail = %f.detail, "on-demand probe failed");
    }
    if debug {
        let mut out = debug_text(&spec.key(), &spec.host, &report);
        out.push_str("\nMetrics:\n");
        out.push_str(&String::from_utf8_lossy(&metrics::render_single(&spec, report)));
        return respond(StatusCode::OK, "text/plain; charset=utf-8", Body::whole(out));
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Body::whole(metrics::render_single(&spec, report)),
    )
}

/// `/transcript?target=T&port=P&module=M[&address=A]`: what the last failing probe of that
/// scheduled spec said on the wire, as `/probe?debug=true` shows a probe.
fn last_failure_transcript(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let params = query_params(req.uri().query().unwrap_or(""));
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (Some(target), Some(port), Some(module)) = (param("target"), param("port"), param("module")) else {
        return text(
            StatusCode::BAD_REQUEST,
            "target, port and module parameters are needed (as the status page links them)\n",
        );
    };
    let address = param("address");
    let store = &state.exporter.store;
    let key = store.snapshot().into_iter().map(|(key, _)| key).find(|key| {
        key.target == target
            && key.port.to_string() == port
            && key.module == module
            && address == key.via.as_ref().map(|v| v.address.to_string()).as_deref()
    });
    let Some(key) = key else {
        return text(StatusCode::NOT_FOUND, "No such scheduled spec.\n");
    };
    match store.last_failure(&key) {
        Some(report) => {
            let host = report.peer.map(|p| p.ip().to_string()).unwrap_or_default();
            respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                Body::whole(debug_text(&key, &host, &report)),
            )
        }
        None => text(StatusCode::NOT_FOUND, "This spec has not failed since the exporter started.\n"),
    }
}

/// `/history[?target=T]`: every spec's (or T's) recent results, oldest first, with the
/// uptime over the last `history.results`.
fn history_json(store: &crate::store::Store, query: &str) -> String {
    let params = query_params(query);
    let target = params.iter().find(|(k, _)| k == "target").map(|(_, v)| v.as_str());
    let window = store.history_bounds().results;
    let specs: Vec<serde_json::Value> = store
        .histories()
        .into_iter()
        .filter(|(key, _)| target.is_none_or(|t| key.target == t))
        .map(|(key, history)| {
            let results: Vec<serde_json::Value> = history
                .entries()
                .map(|e| {
                    serde_json::json!({
                        "at": crate::logging::format_time(e.started()),
                        "success": e.success(),
                        "state": e.state.as_str(),
                        "duration_seconds": e.duration().as_secs_f64(),
                        "phase": e.phase.map(|p| p.as_str()),
                        "reason": e.reason.map(|r| r.as_str()),
                    })
                })
                .collect();
            serde_json::json!({
                "target": key.target,
                "port": key.port,
                "module": key.module,
                "mx": key.via.as_ref().map(|v| v.mx.clone()).filter(|mx| !mx.is_empty()),
                "address": key.via.as_ref().map(|v| v.address.to_string()),
                "uptime": history.uptime(window),
                "results": results,
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&serde_json::json!({ "window": window, "specs": specs }))
        .expect("JSON of plain data");
    text.push('\n');
    text
}

/// A probe in words, for a person troubleshooting: the result, the transcript with times,
/// the phases and TLS.
fn debug_text(key: &crate::config::SpecKey, host: &str, report: &probe::ProbeReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "Probe of {} ({host}) port {} with module {}, started {}",
        key.target,
        key.port,
        key.module,
        crate::logging::format_time(report.started_at)
    );
    let _ = match &report.failure {
        None => writeln!(out, "Result: success in {:.3} ms", report.duration.as_secs_f64() * 1e3),
        Some(f) => writeln!(
            out,
            "Result: FAILED in phase {} after {:.3} ms: {} ({})",
            f.phase,
            report.duration.as_secs_f64() * 1e3,
            f.reason,
            f.detail
        ),
    };
    out.push_str("\nTranscript (C: sent by the exporter, S: from the server, *: what happened):\n");
    match &report.transcript {
        Some(transcript) => transcript.render(&mut out),
        None => out.push_str("  (not recorded)\n"),
    }
    out.push_str("\nPhases (ms):");
    for (phase, took) in &report.phases {
        let _ = write!(out, " {phase} {:.3}", took.as_secs_f64() * 1e3);
    }
    out.push('\n');
    if let Some(tls) = &report.tls {
        let _ = writeln!(
            out,
            "TLS: {} {} {}; certificate {} (CN={}, issuer CN={}, SHA-256 {})",
            tls.version,
            tls.cipher,
            tls.kx_group.as_deref().unwrap_or(""),
            match tls.cert_error {
                None => "verified".to_owned(),
                Some(e) => format!("NOT verified: {}", e.as_str()),
            },
            tls.subject_cn,
            tls.issuer_cn,
            tls.fingerprint_sha256
        );
    }
    out
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
fn split_target(target: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or("use [IPv6]:PORT for IPv6 addresses")?;
        (host, port)
    } else {
        let (host, port) = target.rsplit_once(':').ok_or("the port is missing (HOST:PORT)")?;
        if host.contains(':') {
            return Err("use [IPv6]:PORT for IPv6 addresses".into());
        }
        (host, port)
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err("not a host name or address".into());
    }
    let port: u16 =
        port.parse().ok().filter(|p| *p != 0).ok_or("the port is not a number from 1 to 65535")?;
    Ok((host.to_owned(), port))
}

/// Decodes `a=b&c=d` (percent-escapes, `+` as space) with `form_urlencoded`.
fn query_params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// `POST /-/reload`, when the lifecycle API is on and the request does not come from a page
/// of another site (a form or `fetch` there cannot reload the exporter).
async fn lifecycle_reload(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
    if !state.enable_lifecycle {
        return text(
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled: start with --web.enable-lifecycle, or send SIGHUP.\n",
        );
    }
    if cross_origin(req) {
        return text(StatusCode::FORBIDDEN, "Cross-origin requests cannot reload the exporter.\n");
    }
    reload(state).await
}

/// Whether a browser says the request comes from another site: `Sec-Fetch-Site`, or an
/// `Origin` whose host is not the one asked for.
fn cross_origin(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    let Some(origin) = headers.get(hyper::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = headers.get(hyper::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

async fn reload(state: &Shared) -> Response<Body> {
    let (tx, rx) = oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Reload unavailable: the exporter is shutting down.\n");
    }
    match rx.await {
        Ok(Ok(())) => text(StatusCode::OK, "Configuration reloaded.\n"),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Reload failed, the previous configuration stays in use: {e}\n"),
        ),
        Err(_) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "Reload unavailable: the exporter is shutting down.\n")
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", Body::whole(body.to_owned()))
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, &format!("Method not allowed; use {allow}.\n"));
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(split_target("mx.example.com:25").unwrap(), ("mx.example.com".into(), 25));
        assert_eq!(split_target("[2001:db8::1]:465").unwrap(), ("2001:db8::1".into(), 465));
        assert_eq!(split_target("192.0.2.1:587").unwrap(), ("192.0.2.1".into(), 587));
        assert!(split_target("mx.example.com").unwrap_err().contains("port is missing"));
        assert!(split_target("mx:0").is_err());
        assert!(split_target("mx:99999").is_err());
        assert!(split_target(":25").is_err());
        assert!(split_target("user@mx:25").is_err());
        assert!(split_target("mx example.com:25").is_err(), "whitespace");
        assert!(split_target("mx\t:25").is_err(), "whitespace");
        assert!(split_target("mx/x:25").is_err(), "a path");
        assert!(split_target("2001:db8::1:25").is_err(), "bare IPv6 needs brackets");
    }

    #[test]
    fn query_decoding() {
        let p = query_params("target=mx.example.com%3A25&module=relay+x&flag&bad=%zz%4");
        assert_eq!(p[0], ("target".into(), "mx.example.com:25".into()));
        assert_eq!(p[1], ("module".into(), "relay x".into()));
        assert_eq!(p[2], ("flag".into(), "".into()));
        assert_eq!(p[3], ("bad".into(), "%zz%4".into()));
    }

    /// Issue 11 item 6: the hand-written decoder turned `%+1` into byte 0x01 (a sign is not
    /// a hex digit); it stays as it is.
    #[test]
    fn a_percent_before_a_sign_is_not_a_hex_escape() {
        let p = query_params("module=%+1x&target=%-1");
        assert_eq!(p[0], ("module".into(), "% 1x".into()));
        assert_eq!(p[1], ("target".into(), "%-1".into()));
    }
}
