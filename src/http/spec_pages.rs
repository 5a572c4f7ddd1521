//! The pages of one spec: its last failure's transcript (`/transcript`) and its recent
//! results (`/history`).

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::Body;
use super::on_demand::{debug_text, query_params};
use super::routes::{respond, text};
use super::Shared;

/// `/transcript?target=T&port=P&module=M[&address=A]`: what the last failing probe of that
/// scheduled spec said on the wire, as `/probe?debug=true` shows a probe.
pub(super) fn last_failure_transcript(state: &Shared, req: &Request<Incoming>) -> Response<Body> {
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
pub(super) fn history_json(store: &crate::store::Store, query: &str) -> String {
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
