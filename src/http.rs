//! The HTTP server: `/metrics`, `/`, `/-/healthy`, `/-/ready` and `/-/reload`.
//!
//! Last stop of the data flow. hyper 1, HTTP/1.1 only, with a header read timeout so a
//! client that never finishes its request cannot hold a connection forever, and a cap on
//! open connections. Handlers read shared state; the only one that changes anything is
//! `/-/reload`, which asks the application loop (`app`) to reload and waits for its answer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::Exporter;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

/// A reload request: the answer comes back on the oneshot.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// What handlers need.
pub struct State {
    pub exporter: Arc<Exporter>,
    pub reload: mpsc::Sender<ReloadRequest>,
}

type Body = Full<Bytes>;

/// Serves until `shutdown` resolves. Connections in progress are not waited for.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = &mut shutdown => return,
        };
        let (stream, _peer) = tokio::select! {
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
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    let read_only = method == Method::GET || method == Method::HEAD;
    match path {
        "/metrics" if read_only => {
            let body = state.exporter.render();
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/" if read_only => respond(StatusCode::OK, "text/html; charset=utf-8", LANDING_PAGE),
        "/-/healthy" if read_only => text(StatusCode::OK, "Healthy.\n"),
        "/-/ready" if read_only => {
            if state.exporter.store.all_probed() {
                text(StatusCode::OK, "Ready.\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not ready: some probe specs have not completed their first probe.\n",
                )
            }
        }
        "/-/reload" if method == Method::POST || method == Method::PUT => reload(state).await,
        "/metrics" | "/" | "/-/healthy" | "/-/ready" => method_not_allowed("GET, HEAD"),
        "/-/reload" => method_not_allowed("POST, PUT"),
        _ => text(StatusCode::NOT_FOUND, "Not found. See / for the available pages.\n"),
    }
}

async fn reload(state: &State) -> Response<Body> {
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

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, &format!("Method not allowed; use {allow}.\n"));
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

const LANDING_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>SMTP Exporter</title></head>
<body>
<h1>SMTP Exporter</h1>
<p>Probes SMTP servers on every configured port and times each phase of the session.</p>
<ul>
<li><a href="/metrics">Metrics</a></li>
<li><a href="/-/healthy">Health</a></li>
<li><a href="/-/ready">Readiness</a></li>
</ul>
</body>
</html>
"#;
