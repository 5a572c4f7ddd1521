//! Section 1, CPU per probe: STARTTLS + AUTH PLAIN with full certificate verification,
//! measured for each subject in its own process. The hand-written baseline back to back,
//! the exporter through `/probe`, the exporter on its own schedule, the baseline paced at
//! the schedule's rate, and blackbox_exporter when installed; then the ratios and their
//! verdicts.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::baseline;
use crate::child::{log_tail, Proc};
use crate::report::{out, progress, Report};
use crate::responder::{self, stats_summary, Responder};
use crate::setup::Ctx;
use crate::subjects::{
    drive, exporter_yaml, module_yaml, quoted, start_exporter, start_server, wait_ready, Server, PASSWORD,
    USERNAME,
};
use crate::{Context, Res};

/// CPU of one subject over a batch of probes.
struct CpuRun {
    name: String,
    probes: usize,
    ok: usize,
    cpu_s: f64,
    /// NaN when the subject was not driven back to back.
    wall_s: f64,
    note: String,
}

impl CpuRun {
    fn per_probe_us(&self) -> f64 {
        self.cpu_s / self.probes.max(1) as f64 * 1e6
    }

    fn json(&self) -> Value {
        json!({
            "subject": self.name, "probes": self.probes, "ok": self.ok, "cpu_s": self.cpu_s,
            "wall_s": self.wall_s, "cpu_per_probe_us": self.per_probe_us(), "note": self.note,
        })
    }
}

/// Every subject's run, in the order of the table.
struct Runs {
    baseline: CpuRun,
    via_probe: CpuRun,
    paced: CpuRun,
    scheduled: CpuRun,
    blackbox: Option<CpuRun>,
}

/// Runs section 1: prints its table and ratios, and records its verdicts and JSON.
pub fn section(ctx: &Ctx, report: &mut Report) -> Res<()> {
    let plan = &ctx.plan;
    out("");
    out(&format!(
        "== 1. CPU per probe: STARTTLS + AUTH PLAIN, full certificate verification, no TLS resumption; {} probes per subject, {} at a time, after {} warm-up probes",
        plan.probes, plan.concurrency, plan.warmup
    ));
    progress("CPU: starting the responder");
    let group = responder::Group {
        port: 0,
        addrs: vec!["127.0.0.1".into()],
        per_addr: 1,
        banner_delay_us: 0,
        reply_delay_us: 0,
        tls: true,
    };
    let mut resp = Responder::start(ctx, "cpu-responder", vec![group], false)?;
    let target = *resp.listeners.first().ok_or("the responder has no listener")?;

    progress("CPU: hand-written baseline, back to back");
    let baseline = run_baseline(ctx, target, plan.probes, 0.0)?;
    progress("CPU: exporter through /probe");
    let (via_probe, rss_probe) = measure_probe_path(ctx, target)?;
    progress("CPU: exporter, scheduled path");
    let scheduled = measure_scheduled_path(ctx, &mut resp, target)?;
    progress("CPU: hand-written baseline, paced");
    let rate = plan.sched_specs as f64 / plan.sched_interval as f64;
    let paced_n = ((rate * plan.sched_window as f64) as usize).max(50);
    let mut paced = run_baseline(ctx, target, paced_n, rate)?;
    paced.wall_s = f64::NAN;
    let blackbox = measure_blackbox(ctx, target)?;
    let stats = resp.stats()?;
    drop(resp);

    let runs = Runs { baseline, via_probe, paced, scheduled, blackbox };
    print_table(&runs, &stats);
    let ratios = judge(&runs, report);
    report.json.insert(
        "cpu".into(),
        json!({
            "probes": plan.probes, "concurrency": plan.concurrency, "warmup": plan.warmup,
            "certificate": ctx.certs.describe,
            "baseline": runs.baseline.json(), "exporter_probe": runs.via_probe.json(),
            "baseline_paced": runs.paced.json(), "exporter_scheduled": runs.scheduled.json(),
            "ratio_probe_vs_baseline": ratios.probe,
            "ratio_scheduled_vs_paced_baseline": ratios.scheduled,
            "ratio_scheduled_vs_baseline": ratios.scheduled_vs_back_to_back,
            "blackbox": ratios.blackbox_json,
            "exporter_probe_rss_kib": rss_probe,
            "responder": stats_summary(&stats),
        }),
    );
    Ok(())
}

/// The baseline client in a process of its own: back to back (`rate` 0) or started at
/// `rate` probes per second.
fn run_baseline(ctx: &Ctx, target: SocketAddr, probes: usize, rate: f64) -> Res<CpuRun> {
    let plan = &ctx.plan;
    let job = baseline::Job {
        target,
        ca_file: ctx.certs.ca.clone(),
        server_name: "localhost".into(),
        username: USERNAME.into(),
        password: PASSWORD.into(),
        warmup: plan.warmup,
        probes,
        concurrency: plan.concurrency,
        rate,
    };
    let job_path = ctx.tmp.join("baseline-job.json");
    std::fs::write(&job_path, serde_json::to_string(&job).ctx("job")?).ctx("job")?;
    let out_path = ctx.tmp.join("baseline-out.json");
    let log = ctx.tmp.join("baseline.log");
    let mut cmd = Command::new(&ctx.exe);
    cmd.arg("--baseline-client")
        .arg(&job_path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).ctx("baseline output")?)
        .stderr(std::fs::File::create(&log).ctx("baseline log")?);
    let mut proc = Proc::spawn("baseline", cmd)?;
    let until = Instant::now() + Duration::from_secs(600);
    while proc.running() && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    proc.stop();
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|_| format!("the baseline client failed: {}", log_tail(&log)))?;
    Ok(CpuRun {
        name: if rate > 0.0 {
            format!("baseline paced at {rate:.0} probes/s")
        } else {
            "baseline (tokio + rustls, current-thread)".into()
        },
        probes: v["probes"].as_u64().unwrap_or(0) as usize,
        ok: v["ok"].as_u64().unwrap_or(0) as usize,
        cpu_s: v["cpu_s"].as_f64().unwrap_or(f64::NAN),
        wall_s: v["wall_s"].as_f64().unwrap_or(f64::NAN),
        note: v["first_error"].as_str().map(|e| format!("first error: {e}")).unwrap_or_default(),
    })
}

/// Warm-up, then `n` probes through `path` on `server`, its CPU measured from /proc.
fn measure_http_subject(ctx: &Ctx, name: &str, server: &Server, path: &str, n: usize) -> Res<CpuRun> {
    let warm = drive(server.addr, path, ctx.plan.warmup, ctx.plan.concurrency);
    if warm.ok == 0 {
        return Err(format!(
            "{name}: no successful probe in the warm-up: {}",
            warm.first_failure.unwrap_or_default()
        ));
    }
    let t0 = server.ticks();
    let d = drive(server.addr, path, n, ctx.plan.concurrency);
    let t1 = server.ticks();
    Ok(CpuRun {
        name: name.to_owned(),
        probes: n,
        ok: d.ok,
        cpu_s: (t1.saturating_sub(t0)) as f64 / ctx.tck,
        wall_s: d.wall.as_secs_f64(),
        note: match (d.failed, d.first_failure) {
            (0, _) => String::new(),
            (k, Some(f)) => format!("{k} failed, first: {f}"),
            (k, None) => format!("{k} failed"),
        },
    })
}

/// The exporter, one probe per `/probe` request; also returns its RSS afterwards (KiB).
fn measure_probe_path(ctx: &Ctx, target: SocketAddr) -> Res<(CpuRun, u64)> {
    let modules = module_yaml(ctx, "bench", true, 5);
    // A module with credentials serves /probe only for a host and port the configuration
    // probes with it; the day-long interval keeps the scheduled probe of that one spec out
    // of the measurement (it runs once, at start, before the warm-up).
    let spec = [("responder".to_owned(), target)];
    let yaml = exporter_yaml(&modules, "bench", 86_400, &spec);
    let mut exporter = start_exporter(ctx, "cpu-exporter-probe", &yaml)?;
    let path = format!("/probe?target={target}&module=bench");
    let run = measure_http_subject(ctx, "exporter /probe", &exporter, &path, ctx.plan.probes)?;
    let rss = exporter.rss_kib();
    exporter.proc.stop();
    Ok((run, rss))
}

/// The exporter on its own schedule: its CPU over a window once every spec has been
/// probed, and the responder's accepts over the same window as the probe count.
fn measure_scheduled_path(ctx: &Ctx, resp: &mut Responder, target: SocketAddr) -> Res<CpuRun> {
    let plan = &ctx.plan;
    let specs: Vec<(String, SocketAddr)> =
        (0..plan.sched_specs).map(|i| (format!("sched-{i:05}"), target)).collect();
    let modules = module_yaml(ctx, "bench", true, plan.sched_interval.min(5));
    let mut exporter = start_exporter(
        ctx,
        "cpu-exporter-sched",
        &exporter_yaml(&modules, "bench", plan.sched_interval, &specs),
    )?;
    wait_ready(&mut exporter, Duration::from_secs(300))?;
    thread::sleep(Duration::from_secs(1));
    let a0 = resp.stats()?;
    let t0 = exporter.ticks();
    let w0 = Instant::now();
    thread::sleep(Duration::from_secs(plan.sched_window));
    let t1 = exporter.ticks();
    let wall = w0.elapsed();
    let a1 = resp.stats()?;
    exporter.proc.stop();
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let probes = count(&a1, "accepted").saturating_sub(count(&a0, "accepted")) as usize;
    let failed = count(&a1, "failed").saturating_sub(count(&a0, "failed")) as usize;
    Ok(CpuRun {
        name: format!("exporter scheduled ({} specs @ {} s)", plan.sched_specs, plan.sched_interval),
        probes,
        ok: probes.saturating_sub(failed),
        cpu_s: t1.saturating_sub(t0) as f64 / ctx.tck,
        wall_s: f64::NAN,
        note: format!(
            "{:.0} s window, {:.0} probes/s",
            wall.as_secs_f64(),
            probes as f64 / wall.as_secs_f64()
        ),
    })
}

/// blackbox_exporter's `tcp` prober through its `/probe` (EHLO, STARTTLS, EHLO, QUIT; it
/// has no AUTH), or `None` when it is not installed.
fn measure_blackbox(ctx: &Ctx, target: SocketAddr) -> Res<Option<CpuRun>> {
    let Some(bin) = &ctx.blackbox_bin else {
        out("  blackbox_exporter: not installed (apt-get install prometheus-blackbox-exporter); skipped");
        return Ok(None);
    };
    progress("CPU: blackbox_exporter");
    let config = format!(
        "modules:\n  smtp_starttls:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      preferred_ip_protocol: ip4\n      query_response:\n        - expect: \"^220 \"\n        - send: \"EHLO bench.invalid\\r\"\n        - expect: \"^250-STARTTLS\"\n        - send: \"STARTTLS\\r\"\n        - expect: \"^220 \"\n        - starttls: true\n        - send: \"EHLO bench.invalid\\r\"\n        - expect: \"^250 \"\n        - send: \"QUIT\\r\"\n      tls_config:\n        ca_file: {}\n        server_name: localhost\n",
        quoted(&ctx.certs.ca)
    );
    let mut server = start_server(ctx, "blackbox", bin, &config)?;
    let path = format!("/probe?module=smtp_starttls&target={target}");
    let mut run = measure_http_subject(ctx, "blackbox_exporter /probe", &server, &path, ctx.plan.probes)?;
    run.note = if run.note.is_empty() {
        "no AUTH: tcp prober".into()
    } else {
        format!("no AUTH: tcp prober; {}", run.note)
    };
    server.proc.stop();
    Ok(Some(run))
}

/// The table of subjects, and the responder's first session error if it saw one.
fn print_table(runs: &Runs, responder_stats: &Value) {
    let mut rows = vec![&runs.baseline, &runs.via_probe, &runs.paced, &runs.scheduled];
    rows.extend(runs.blackbox.as_ref());
    out(&format!(
        "  {:<42} {:>7} {:>7} {:>9} {:>11} {:>11}",
        "subject", "probes", "ok", "CPU s", "CPU/probe", "wall/probe"
    ));
    for r in &rows {
        let wall = if r.wall_s.is_nan() {
            "-".to_owned()
        } else {
            format!("{:.2} ms", r.wall_s / r.probes.max(1) as f64 * 1e3)
        };
        out(&format!(
            "  {:<42} {:>7} {:>7} {:>9.3} {:>8.0} µs {:>11}{}",
            r.name,
            r.probes,
            r.ok,
            r.cpu_s,
            r.per_probe_us(),
            wall,
            if r.note.is_empty() { String::new() } else { format!("  ({})", r.note) }
        ));
    }
    if let Some(e) = responder_stats["first_error"].as_str() {
        out(&format!("  responder: first session error seen: {e}"));
    }
}

/// The ratios between subjects.
struct Ratios {
    probe: f64,
    scheduled: f64,
    scheduled_vs_back_to_back: f64,
    blackbox_json: Value,
}

/// Prints the ratios and records their verdicts.
fn judge(runs: &Runs, report: &mut Report) -> Ratios {
    let (baseline, via_probe, paced, scheduled) =
        (&runs.baseline, &runs.via_probe, &runs.paced, &runs.scheduled);
    let probe_ratio = via_probe.per_probe_us() / baseline.per_probe_us();
    let sched_ratio = scheduled.per_probe_us() / paced.per_probe_us();
    let sched_vs_b2b = scheduled.per_probe_us() / baseline.per_probe_us();
    out(&format!("  exporter /probe    / baseline back to back = {probe_ratio:.2}x"));
    out(&format!("  exporter scheduled / baseline paced alike  = {sched_ratio:.2}x"));
    out(&format!("  exporter scheduled / baseline back to back = {sched_vs_b2b:.2}x"));
    let all = [Some(baseline), Some(via_probe), Some(paced), Some(scheduled), runs.blackbox.as_ref()];
    if !all.into_iter().flatten().all(|r| r.ok == r.probes && r.probes > 0) {
        out("  WARNING: not every probe succeeded; see the notes above");
    }
    report.verdict(
        "CPU/probe: exporter /probe vs baseline",
        format!("{probe_ratio:.2}x ({:.0} vs {:.0} µs)", via_probe.per_probe_us(), baseline.per_probe_us()),
        "<= 1.5x",
        Some(probe_ratio <= 1.5),
    );
    report.verdict(
        "CPU/probe: exporter scheduled vs paced baseline",
        format!("{sched_ratio:.2}x ({:.0} vs {:.0} µs)", scheduled.per_probe_us(), paced.per_probe_us()),
        "<= 1.5x",
        Some(sched_ratio <= 1.5),
    );
    let blackbox_json = judge_blackbox(runs, report);
    Ratios {
        probe: probe_ratio,
        scheduled: sched_ratio,
        scheduled_vs_back_to_back: sched_vs_b2b,
        blackbox_json,
    }
}

/// The ratios to blackbox_exporter and their verdict (SKIP when it is not installed).
fn judge_blackbox(runs: &Runs, report: &mut Report) -> Value {
    let target = "CPU/probe: exporter /probe vs blackbox_exporter";
    let Some(bb) = &runs.blackbox else {
        report.verdict(target, "not installed".into(), "<= 0.33x", None);
        return Value::Null;
    };
    let bb_us = bb.per_probe_us();
    let r1 = runs.via_probe.per_probe_us() / bb_us;
    let r2 = runs.scheduled.per_probe_us() / bb_us;
    out(&format!("  exporter /probe    / blackbox_exporter     = {r1:.2}x  (target <= 0.33x)"));
    out(&format!("  exporter scheduled / blackbox_exporter     = {r2:.2}x"));
    report.verdict(
        target,
        format!("{r1:.2}x ({:.0} vs {bb_us:.0} µs)", runs.via_probe.per_probe_us()),
        "<= 0.33x",
        Some(r1 <= 1.0 / 3.0),
    );
    json!({"run": bb.json(), "exporter_probe_ratio": r1, "exporter_scheduled_ratio": r2})
}
