//! Section 3, accuracy: the `banner` phase the exporter reports against the greeting delay
//! the responder injects. The responder runs in precise mode (one listener per delay,
//! greetings written from a blocking thread with a busy-wait tail, each greeting's actual
//! delay recorded); the exporter probes through `/probe`, one request at a time.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::http::Client as Http;

use crate::report::{out, percentile, progress, sorted, Report};
use crate::responder::{self, Responder};
use crate::setup::Ctx;
use crate::subjects::{exporter_yaml, module_yaml, probe_succeeded, start_exporter};
use crate::Res;

/// Runs section 3: prints a row per injected delay, and records the verdict and JSON.
pub fn section(ctx: &Ctx, report: &mut Report) -> Res<()> {
    let plan = &ctx.plan;
    out("");
    out(&format!(
        "== 3. Accuracy: reported banner phase minus the injected greeting delay; {} sequential /probe requests per delay (plain SMTP module)",
        plan.acc_samples
    ));
    progress("accuracy: starting the precise responder");
    let groups: Vec<responder::Group> = plan
        .acc_delays
        .iter()
        .map(|&d| responder::Group {
            port: 0,
            addrs: vec!["127.0.0.1".into()],
            per_addr: 1,
            banner_delay_us: d * 1000,
            reply_delay_us: 0,
            tls: false,
        })
        .collect();
    let mut resp = Responder::start(ctx, "accuracy-responder", groups, true)?;
    let modules = module_yaml(ctx, "plain", false, 5);
    let exporter = start_exporter(ctx, "accuracy-exporter", &exporter_yaml(&modules, "plain", 60, &[]))?;
    let mut http = Http::new(exporter.addr, Duration::from_secs(30));
    out(&format!(
        "  {:>9} {:>8} {:>12} {:>12} {:>12} {:>22} {:>22}",
        "delay ms",
        "samples",
        "error p50",
        "error p99",
        "error max",
        "responder overshoot p99",
        "error vs actual p99"
    ));
    let mut rows = Vec::new();
    for (i, &delay) in plan.acc_delays.iter().enumerate() {
        progress(&format!("accuracy: {delay} ms"));
        let target = resp.listeners[i];
        let row = measure_delay(&mut http, &mut resp, target, delay, plan.acc_samples)?;
        row.print();
        rows.push(row);
    }
    drop(exporter);
    drop(resp);
    out(
        "  error = reported banner - injected delay; it includes loopback and wake-up latency on both sides.",
    );
    out("  responder overshoot = accept-to-greeting-written time in the responder - injected delay.");
    let worst_p99 = rows.iter().map(|r| percentile(&r.error, 99.0)).fold(f64::NEG_INFINITY, f64::max);
    report.verdict(
        "timing error p99, worst injected delay",
        format!("{worst_p99:.3} ms"),
        "< 1 ms",
        Some(worst_p99.abs() < 1.0),
    );
    let rows: Vec<Value> = rows.iter().map(Row::json).collect();
    report.json.insert("accuracy".into(), json!({"samples": plan.acc_samples, "rows": rows}));
    Ok(())
}

/// The errors measured for one injected delay, each sorted, in milliseconds.
struct Row {
    delay_ms: u64,
    samples: usize,
    failures: usize,
    /// Reported banner minus the injected delay.
    error: Vec<f64>,
    /// The responder's accept-to-greeting-written time minus the injected delay.
    overshoot: Vec<f64>,
    /// Reported banner minus the responder's actual delay, probe by probe (empty when
    /// they cannot be matched one to one).
    vs_actual: Vec<f64>,
}

/// A few untimed probes, then `samples` timed ones against the listener with `delay_ms`.
fn measure_delay(
    http: &mut Http,
    resp: &mut Responder,
    target: SocketAddr,
    delay_ms: u64,
    samples: usize,
) -> Res<Row> {
    let path = format!("/probe?target={target}&module=plain");
    for _ in 0..5 {
        let _ = http.get(&path);
    }
    resp.reset()?;
    let mut reported = Vec::new();
    let mut failures = 0;
    for _ in 0..samples {
        match http.get(&path).ok().filter(|r| probe_succeeded(r.text())).and_then(|r| banner_of(r.text())) {
            Some(v) => reported.push(v * 1e3),
            None => failures += 1,
        }
    }
    let stats = resp.stats()?;
    let actual: Vec<f64> = stats["banner_delays_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).map(|ns| ns / 1e6).collect())
        .unwrap_or_default();
    let nominal = delay_ms as f64;
    // Matched one to one only when nothing failed (probes are sequential).
    let vs_actual = if failures == 0 && actual.len() == reported.len() {
        sorted(reported.iter().zip(&actual).map(|(r, a)| r - a).collect())
    } else {
        Vec::new()
    };
    Ok(Row {
        delay_ms,
        samples: reported.len(),
        failures,
        error: sorted(reported.iter().map(|r| r - nominal).collect()),
        overshoot: sorted(actual.iter().map(|a| a - nominal).collect()),
        vs_actual,
    })
}

/// The `banner` phase duration in a `/probe` answer, in seconds.
fn banner_of(body: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with("smtp_probe_phase_duration_seconds{") && l.contains("phase=\"banner\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl Row {
    fn print(&self) {
        out(&format!(
            "  {:>9} {:>8} {:>9.3} ms {:>9.3} ms {:>9.3} ms {:>19.3} ms {:>19.3} ms{}",
            self.delay_ms,
            self.samples,
            percentile(&self.error, 50.0),
            percentile(&self.error, 99.0),
            self.error.last().copied().unwrap_or(f64::NAN),
            percentile(&self.overshoot, 99.0),
            percentile(&self.vs_actual, 99.0),
            if self.failures > 0 { format!("  ({} failed)", self.failures) } else { String::new() }
        ));
    }

    fn json(&self) -> Value {
        json!({
            "delay_ms": self.delay_ms, "samples": self.samples, "failures": self.failures,
            "error_p50_ms": percentile(&self.error, 50.0), "error_p99_ms": percentile(&self.error, 99.0),
            "error_max_ms": self.error.last().copied(), "error_min_ms": self.error.first().copied(),
            "responder_overshoot_p50_ms": percentile(&self.overshoot, 50.0),
            "responder_overshoot_p99_ms": percentile(&self.overshoot, 99.0),
            "error_vs_actual_p50_ms": percentile(&self.vs_actual, 50.0),
            "error_vs_actual_p99_ms": percentile(&self.vs_actual, 99.0),
        })
    }
}
