//! Routing a request to its page, after the web config's checks (`web`): `/metrics`,
//! the lifecycle endpoints, and the small responses every page shares.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::body::Body;
use super::conn::{self, Slot};
use super::on_demand::{on_demand_probe, query_params};
use super::spec_pages::{history_json, last_failure_transcript};
use super::{hosts, status, web, Shared};
use tokio::sync::oneshot;

/// Authenticates the request (when the web configuration has users), routes it, and adds
/// the configured headers.
pub(super) async fn handle(state: &Shared, slot: &Slot, req: Request<Incoming>) -> Response<Body> {
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

pub(super) async fn route(state: &Shared, slot: &Slot, req: Request<Incoming>) -> Response<Body> {
    use super::paths::Page;
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
pub(super) fn metrics_response(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
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
pub(super) fn accepts_gzip(values: hyper::header::GetAll<'_, HeaderValue>) -> bool {
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

/// `POST /-/reload`, when the lifecycle API is on and the request does not come from a page
/// of another site (a form or `fetch` there cannot reload the exporter).
pub(super) async fn lifecycle_reload(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
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
pub(super) fn cross_origin(req: &Request<Incoming>) -> bool {
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

pub(super) async fn reload(state: &Shared) -> Response<Body> {
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

pub(super) fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(super) fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", Body::whole(body.to_owned()))
}

pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, &format!("Method not allowed; use {allow}.\n"));
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}
