//! `/probe?target=HOST:PORT&module=M`: one probe on demand, within the scheduler's
//! `max_concurrency`, answered as an exposition (or, with `debug=true`, in words).

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::Body;
use super::routes::{respond, text};
use super::Shared;
use crate::metrics;
use crate::probe;

/// How long an on-demand probe waits for a free `max_concurrency` permit.
pub(super) const PROBE_PERMIT_WAIT: Duration = Duration::from_secs(1);

/// Time kept back from Prometheus' scrape timeout for encoding and transfer.
pub(super) const SCRAPE_TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// `/probe?target=HOST:PORT&module=NAME`: one probe now, answered with its series only.
pub(super) async fn on_demand_probe(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
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

/// A probe in words, for a person troubleshooting: the result, the transcript with times,
/// the phases and TLS.
pub(super) fn debug_text(key: &crate::config::SpecKey, host: &str, report: &probe::ProbeReport) -> String {
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
pub(super) fn split_target(target: &str) -> Result<(String, u16), String> {
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
pub(super) fn query_params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}
