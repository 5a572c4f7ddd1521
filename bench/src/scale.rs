//! Section 2, scale: a simulated fleet probed on the exporter's own schedule.
//!
//! The fleet responder listens on many loopback addresses with a greeting delay and a
//! reply delay; the exporter gets one spec per target. Smaller exporters first give the
//! `/metrics` latency at smaller sizes; then the fleet exporter runs until its first round
//! is over, and a steady window of whole CLOCK_MONOTONIC seconds measures its CPU, memory
//! and the spread of probe starts (from the responder's accepts). Last, `/metrics` is
//! scraped at full size while the fleet keeps probing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::http::Client as Http;

use crate::cli::Plan;
use crate::report::{mean, out, percentile, progress, sorted, Report};
use crate::responder::{self, stats_summary, Responder};
use crate::setup::Ctx;
use crate::subjects::{exporter_yaml, module_yaml, start_exporter, wait_ready, Server};
use crate::{sys, Res};

const SECOND_NS: u64 = 1_000_000_000;

/// Runs section 2: prints the fleet's figures and the `/metrics` curve, and records its
/// verdicts and JSON.
pub fn section(ctx: &Ctx, report: &mut Report) -> Res<()> {
    let plan = &ctx.plan;
    print_heading(plan);
    let mut resp = start_fleet_responder(plan, ctx)?;
    let listeners_count = resp.listeners.len();
    let specs = fleet_specs(&resp.listeners, plan.fleet_specs)?;
    let modules = module_yaml(ctx, "fleet", plan.fleet_tls, plan.fleet_interval.min(10));
    let mut curve = scrape_smaller_exporters(ctx, &modules, &specs)?;
    let mut fleet = run_fleet(ctx, &mut resp, &modules, &specs)?;
    let cpu = FleetCpu::of(ctx, &fleet);
    let stats = resp.stats()?;
    let starts = Starts::count(&stats, &fleet, plan.fleet_specs as f64 / plan.fleet_interval as f64);
    let greeting_late_ms = greeting_lateness_ms(&stats, plan.fleet_banner_ms);
    let sched_cpu_per_probe_us = fleet.window_ticks() as f64 / ctx.tck / starts.window_probes.max(1.0) * 1e6;
    let after = scrape_fleet(ctx, &mut fleet)?;
    let resp_stats = stats_summary(&resp.stats()?);
    drop(resp);
    let banner = BannerErrors::of(&after.scrapes, plan.fleet_banner_ms);
    curve.push(after.scrapes);
    let results = Results {
        n: plan.fleet_specs,
        interval: plan.fleet_interval,
        listeners: listeners_count,
        fleet,
        cpu,
        starts,
        sched_cpu_per_probe_us,
        greeting_late_ms,
        memory: after.memory,
        growth: Growth::of(&curve, plan.fleet_specs),
        curve,
        banner,
        future_bytes: probe_future_bytes(ctx, plan.fleet_tls),
        resp_stats,
    };
    print_fleet(plan, &results);
    print_curve(plan, &results);
    record_verdicts(plan, &results, report);
    report.json.insert("scale".into(), results.json(plan));
    Ok(())
}

fn print_heading(plan: &Plan) {
    let (n, interval) = (plan.fleet_specs, plan.fleet_interval);
    out("");
    out(&format!(
        "== 2. Scale: {n} specs at a {interval} s interval ({:.1} probes/s), {}, greeting delay {} ms, reply delay {} ms, {} listeners on {} loopback addresses, max_concurrency 64 (default)",
        n as f64 / interval as f64,
        if plan.fleet_tls { "STARTTLS + AUTH PLAIN" } else { "plain SMTP" },
        plan.fleet_banner_ms,
        plan.fleet_reply_ms,
        plan.fleet_addrs * plan.fleet_ports,
        plan.fleet_addrs
    ));
    if plan.quick {
        out(&format!(
            "  QUICK MODE: {n} specs at {interval} s instead of 10,000 at 60 s (same probe rate per second), a {} s window; /metrics at 10,000 specs is extrapolated",
            plan.fleet_window
        ));
    }
}

/// The fleet's address `i`: 127.0.1.1, 127.0.1.2, ... 127.0.1.250, 127.0.2.1, ...
fn fleet_addr(i: usize) -> String {
    format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn start_fleet_responder(plan: &Plan, ctx: &Ctx) -> Res<Responder> {
    progress(&format!(
        "scale: starting the fleet responder ({} listeners)",
        plan.fleet_addrs * plan.fleet_ports
    ));
    let group = responder::Group {
        port: 0,
        addrs: (0..plan.fleet_addrs).map(fleet_addr).collect(),
        per_addr: plan.fleet_ports,
        banner_delay_us: plan.fleet_banner_ms * 1000,
        reply_delay_us: plan.fleet_reply_ms * 1000,
        tls: plan.fleet_tls,
    };
    Responder::start(ctx, "fleet-responder", vec![group], false)
}

/// `n` specs, each its own target name, spread round-robin over the listeners.
fn fleet_specs(listeners: &[SocketAddr], n: usize) -> Res<Vec<(String, SocketAddr)>> {
    if listeners.is_empty() {
        return Err("the fleet responder has no listener".into());
    }
    Ok((0..n).map(|i| (format!("fleet-{i:05}"), listeners[i % listeners.len()])).collect())
}

/// The `/metrics` curve below the fleet's size: an otherwise idle exporter per size.
fn scrape_smaller_exporters(ctx: &Ctx, modules: &str, specs: &[(String, SocketAddr)]) -> Res<Vec<Scrapes>> {
    let plan = &ctx.plan;
    let mut curve = Vec::new();
    for &size in plan.scrape_sizes.iter().filter(|&&s| s < specs.len()) {
        progress(&format!("scale: /metrics with {size} specs"));
        let name = format!("scrape-{size}");
        let yaml = exporter_yaml(modules, "fleet", plan.fleet_interval, &specs[..size]);
        let mut exporter = start_exporter(ctx, &name, &yaml)?;
        wait_ready(&mut exporter, Duration::from_secs(300))?;
        thread::sleep(Duration::from_secs(1));
        let idle0 = exporter.ticks();
        thread::sleep(Duration::from_secs(1));
        let idle_rate = exporter.ticks().saturating_sub(idle0) as f64;
        curve.push(scrape(ctx, &exporter, size, plan.scrapes, idle_rate)?);
        exporter.proc.stop();
    }
    Ok(curve)
}

/// The fleet exporter, and what its steady window measured.
struct Fleet {
    exporter: Server,
    spawn_ns: u64,
    /// Seconds from spawn to the end of the first round (NaN when it did not end).
    ready_after: f64,
    /// The window, in CLOCK_MONOTONIC nanoseconds on whole seconds.
    window_start: u64,
    window_end: u64,
    s0: Sample,
    s1: Sample,
    /// One sample a second from spawn to the end of the window.
    samples: Vec<Sample>,
    rss_window_end: u64,
    hwm_window_end: u64,
}

impl Fleet {
    fn window_s(&self) -> f64 {
        (self.s1.t_ns - self.s0.t_ns) as f64 / 1e9
    }

    fn window_ticks(&self) -> u64 {
        self.s1.ticks - self.s0.ticks
    }
}

/// Starts the fleet exporter, waits for its first round, and samples it over the steady
/// window; the responder's counts are reset just before the window.
fn run_fleet(ctx: &Ctx, resp: &mut Responder, modules: &str, specs: &[(String, SocketAddr)]) -> Res<Fleet> {
    let plan = &ctx.plan;
    let (n, interval) = (plan.fleet_specs, plan.fleet_interval);
    progress(&format!("scale: starting the exporter with {n} specs"));
    resp.reset()?;
    let yaml = exporter_yaml(modules, "fleet", interval, specs);
    let spawn_ns = sys::mono_ns();
    let mut exporter = start_exporter(ctx, "fleet-exporter", &yaml)?;
    let limit = Duration::from_secs(interval * 2 + plan.fleet_window + 600);
    let sampler = Sampler::start(exporter.pid(), resp.pid(), limit);
    let ready = wait_ready(&mut exporter, Duration::from_secs(interval + 600));
    let ready_after = match &ready {
        Ok(_) => (sys::mono_ns() - spawn_ns) as f64 / 1e9,
        Err(_) => f64::NAN,
    };
    match &ready {
        Ok(_) => progress(&format!("scale: first round of {n} probes done after {ready_after:.1} s")),
        Err(e) => progress(&format!("scale: the first round did not complete: {e}")),
    }
    let (window_start, window_end) = steady_window(spawn_ns, interval, ready.is_ok(), plan.fleet_window);
    progress(&format!(
        "scale: steady window of {} s starts in {:.0} s",
        plan.fleet_window,
        (window_start.saturating_sub(sys::mono_ns())) as f64 / 1e9
    ));
    sys::sleep_until_mono(window_start - 500_000_000);
    resp.reset()?;
    sys::sleep_until_mono(window_start);
    let s0 = take_sample(exporter.pid(), resp.pid());
    sys::sleep_until_mono(window_end);
    let s1 = take_sample(exporter.pid(), resp.pid());
    let samples = sampler.finish();
    let rss_window_end = exporter.rss_kib();
    let hwm_window_end = sys::proc_status_kib(exporter.pid(), "VmHWM").unwrap_or(0);
    Ok(Fleet {
        exporter,
        spawn_ns,
        ready_after,
        window_start,
        window_end,
        s0,
        s1,
        samples,
        rss_window_end,
        hwm_window_end,
    })
}

/// The steady window: `window_s` seconds from 2 s after the first interval (or after the
/// first round, when it took longer), on whole CLOCK_MONOTONIC seconds so that the
/// responder's per-second buckets line up.
fn steady_window(spawn_ns: u64, interval: u64, ready: bool, window_s: u64) -> (u64, u64) {
    let margin_ns = 2 * SECOND_NS;
    let mut start = spawn_ns + interval * SECOND_NS + margin_ns;
    if ready {
        start = start.max(sys::mono_ns() + margin_ns);
    }
    let start = start.div_ceil(SECOND_NS) * SECOND_NS;
    (start, start + window_s * SECOND_NS)
}

/// CPU over the window and at start-up, from the 1-s samples.
struct FleetCpu {
    window_s: f64,
    /// Cores, averaged over the window.
    avg: f64,
    responder_avg: f64,
    /// Fraction of all cores busy over the window.
    machine_busy: f64,
    ncpu: f64,
    /// Cores, per 1-s sample in the window.
    per_second: Vec<f64>,
    peak: f64,
    startup_peak: f64,
    /// RSS in KiB, highest of the window's samples and its end.
    rss_max: u64,
}

impl FleetCpu {
    fn of(ctx: &Ctx, fleet: &Fleet) -> FleetCpu {
        let (s0, s1) = (fleet.s0, fleet.s1);
        let window_s = fleet.window_s();
        let cores =
            |a: &Sample, b: &Sample| (b.ticks - a.ticks) as f64 / ctx.tck / ((b.t_ns - a.t_ns) as f64 / 1e9);
        let mut per_second = Vec::new();
        let mut rss_max = fleet.rss_window_end;
        for pair in fleet.samples.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.t_ns >= s0.t_ns.saturating_sub(500_000_000) && b.t_ns <= s1.t_ns + 500_000_000 {
                per_second.push(cores(&a, &b));
                rss_max = rss_max.max(b.rss_kib);
            }
        }
        let startup_peak = fleet
            .samples
            .windows(2)
            .filter(|p| p[1].t_ns <= s0.t_ns)
            .map(|p| cores(&p[0], &p[1]))
            .fold(f64::NAN, f64::max);
        FleetCpu {
            window_s,
            avg: fleet.window_ticks() as f64 / ctx.tck / window_s,
            responder_avg: (s1.responder_ticks - s0.responder_ticks) as f64 / ctx.tck / window_s,
            machine_busy: (s1.sys_busy - s0.sys_busy) as f64 / (s1.sys_total - s0.sys_total).max(1) as f64,
            ncpu: thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64,
            peak: per_second.iter().copied().fold(f64::NAN, f64::max),
            per_second,
            startup_peak,
            rss_max,
        }
    }
}

/// Probe starts per whole second of the window, from the responder's accepts.
struct Starts {
    counts: Vec<f64>,
    mean: f64,
    max: f64,
    min: f64,
    /// Busiest second over the mean.
    spread: f64,
    expected_rate: f64,
    window_probes: f64,
}

impl Starts {
    fn count(stats: &Value, fleet: &Fleet, expected_rate: f64) -> Starts {
        let (first_sec, last_sec) = (fleet.window_start / SECOND_NS, fleet.window_end / SECOND_NS);
        let mut buckets: BTreeMap<u64, u64> = (first_sec..last_sec).map(|s| (s, 0)).collect();
        for entry in stats["per_sec"].as_array().into_iter().flatten() {
            let (Some(sec), Some(c)) = (entry[0].as_u64(), entry[1].as_u64()) else { continue };
            if let Some(b) = buckets.get_mut(&sec) {
                *b = c;
            }
        }
        let counts: Vec<f64> = buckets.values().map(|&c| c as f64).collect();
        let mean = mean(&counts);
        let max = counts.iter().copied().fold(f64::NAN, f64::max);
        Starts {
            mean,
            max,
            min: counts.iter().copied().fold(f64::NAN, f64::min),
            spread: max / mean,
            expected_rate,
            window_probes: counts.iter().sum(),
            counts,
        }
    }
}

/// How late the responder wrote each greeting in the window, beyond its delay (sorted ms).
fn greeting_lateness_ms(stats: &Value, banner_delay_ms: u64) -> Vec<f64> {
    sorted(
        stats["banner_delays_ns"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).map(|ns| ns / 1e6 - banner_delay_ms as f64).collect())
            .unwrap_or_default(),
    )
}

/// The fleet exporter's memory and resources after the full-size scrapes.
struct MemoryAfter {
    /// RSS (KiB) 2 s after the last scrape.
    rss_settled: u64,
    hwm_end: u64,
    threads: Option<u64>,
    fds: usize,
}

struct AfterScrapes {
    scrapes: Scrapes,
    memory: MemoryAfter,
}

/// `/metrics` at full size while the fleet keeps probing, then the exporter's memory;
/// stops the exporter.
fn scrape_fleet(ctx: &Ctx, fleet: &mut Fleet) -> Res<AfterScrapes> {
    let n = ctx.plan.fleet_specs;
    progress(&format!("scale: /metrics with {n} specs"));
    let busy_rate = fleet.window_ticks() as f64 / fleet.window_s();
    let exporter = &mut fleet.exporter;
    let scrapes = scrape(ctx, exporter, n, ctx.plan.scrapes, busy_rate)?;
    thread::sleep(Duration::from_secs(2));
    let memory = MemoryAfter {
        rss_settled: exporter.rss_kib(),
        hwm_end: sys::proc_status_kib(exporter.pid(), "VmHWM").unwrap_or(0),
        threads: sys::proc_status_value(exporter.pid(), "Threads"),
        fds: std::fs::read_dir(format!("/proc/{}/fd", exporter.pid())).map(|d| d.count()).unwrap_or(0),
    };
    exporter.proc.stop();
    Ok(AfterScrapes { scrapes, memory })
}

/// The banner phase of each spec's last probe minus the greeting delay (sorted ms),
/// before any scrape and for probes that overlapped the scrapes.
struct BannerErrors {
    before: Vec<f64>,
    during: Vec<f64>,
}

impl BannerErrors {
    fn of(big: &Scrapes, banner_delay_ms: u64) -> BannerErrors {
        let errs = |v: &[f64]| sorted(v.iter().map(|b| b * 1e3 - banner_delay_ms as f64).collect());
        BannerErrors { before: errs(&big.banner_before_s), during: errs(&big.banner_during_s) }
    }
}

/// How `/metrics` latency grows with the series count, and the figure at 10,000 specs.
struct Growth {
    /// Growth exponents between neighbouring sizes: 1.0 is linear in the series count.
    slopes: Vec<f64>,
    last_slope: f64,
    linear: bool,
    series_per_spec: f64,
    metrics_10k_ms: f64,
    extrapolated: bool,
}

impl Growth {
    fn of(curve: &[Scrapes], n: usize) -> Growth {
        let slopes: Vec<f64> = curve
            .windows(2)
            .map(|w| (w[1].median_ms / w[0].median_ms).ln() / (w[1].series as f64 / w[0].series as f64).ln())
            .collect();
        let last_slope = slopes.last().copied().unwrap_or(f64::NAN);
        let big = curve.last().expect("the fleet's scrapes are in the curve");
        let series_per_spec = big.series as f64 / n as f64;
        let (metrics_10k_ms, extrapolated) = if n >= 10_000 {
            (big.median_ms * 10_000.0 / n as f64, n != 10_000)
        } else {
            (big.ms_per_1000_series() * series_per_spec * 10.0, true)
        };
        Growth {
            slopes,
            last_slope,
            linear: (0.8..=1.25).contains(&last_slope),
            series_per_spec,
            metrics_10k_ms,
            extrapolated,
        }
    }
}

/// Everything the section measured, for the printout, the verdicts and the JSON.
struct Results {
    n: usize,
    interval: u64,
    /// The responder's listeners.
    listeners: usize,
    fleet: Fleet,
    cpu: FleetCpu,
    starts: Starts,
    sched_cpu_per_probe_us: f64,
    greeting_late_ms: Vec<f64>,
    memory: MemoryAfter,
    /// `/metrics` by size; the last point is the fleet.
    curve: Vec<Scrapes>,
    growth: Growth,
    banner: BannerErrors,
    future_bytes: Option<usize>,
    resp_stats: Value,
}

impl Results {
    fn big(&self) -> &Scrapes {
        self.curve.last().expect("the fleet's scrapes are in the curve")
    }

    /// RSS per added spec, from the smallest exporter of the curve to the fleet (KiB).
    fn marginal_kib_per_spec(&self) -> Option<f64> {
        let smallest = self.curve.first().filter(|c| c.specs < self.n)?;
        Some(
            (self.fleet.rss_window_end as f64 - smallest.rss_before_kib as f64)
                / (self.n - smallest.specs) as f64,
        )
    }

    /// RSS after the scrapes: the higher of right after and 2 s later (KiB).
    fn rss_scraped(&self) -> u64 {
        self.big().rss_after_kib.max(self.memory.rss_settled)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The fleet's lines: start-up, window, CPU, memory, probe starts, banner timings.
fn print_fleet(plan: &Plan, r: &Results) {
    let (n, fleet, cpu, starts) = (r.n, &r.fleet, &r.cpu, &r.starts);
    out(&format!(
        "  start-up: first round of {n} probes complete {:.1} s after spawn (CPU peak then {:.0}% of a core)",
        fleet.ready_after,
        cpu.startup_peak * 100.0
    ));
    out(&format!(
        "  steady window: {:.1} s, starting {:.1} s after spawn",
        cpu.window_s,
        (fleet.s0.t_ns - fleet.spawn_ns) as f64 / 1e9
    ));
    out(&format!(
        "  exporter CPU: average {:.1}% of one core, peak {:.0}% (1-s samples); {:.0} µs per scheduled probe",
        cpu.avg * 100.0,
        cpu.peak * 100.0,
        r.sched_cpu_per_probe_us
    ));
    out(&format!(
        "  (responder: {:.0}% of a core; whole machine busy {:.0}% of {} cores, so others used {:.0}% of a core)",
        cpu.responder_avg * 100.0,
        cpu.machine_busy * 100.0,
        cpu.ncpu,
        (cpu.machine_busy * cpu.ncpu - cpu.avg - cpu.responder_avg).max(0.0) * 100.0
    ));
    out(&format!(
        "  RSS: {:.1} MiB at the end of the window ({:.2} KiB per spec{}), max {:.1} MiB during it; VmHWM {:.1} MiB (start-up burst included)",
        mib(fleet.rss_window_end),
        fleet.rss_window_end as f64 / n as f64,
        r.marginal_kib_per_spec().map(|m| format!(", {m:.2} KiB per added spec")).unwrap_or_default(),
        mib(cpu.rss_max),
        mib(fleet.hwm_window_end)
    ));
    if let Some(b) = r.future_bytes {
        out(&format!(
            "  (diagnostic: the probe::run future is {b} bytes; a spec task that awaits it inline reserves at least that much while idle)"
        ));
    }
    let big = r.big();
    out(&format!(
        "  RSS after {} scrapes of /metrics: {:.1} MiB (2 s later: {:.1} MiB; VmHWM {:.1} MiB); {} threads, {} open files",
        plan.scrapes + 1,
        mib(big.rss_after_kib),
        mib(r.memory.rss_settled),
        mib(r.memory.hwm_end),
        r.memory.threads.map(|t| t.to_string()).unwrap_or_default(),
        r.memory.fds
    ));
    out(&format!(
        "  probe starts per second over {} whole seconds: mean {:.1} (expected {:.1}), min {:.0}, max {:.0}, max/mean {:.2}",
        starts.counts.len(),
        starts.mean,
        starts.expected_rate,
        starts.min,
        starts.max,
        starts.spread
    ));
    out(&format!(
        "  last round: {} of {n} specs with smtp_probe_success 1; responder sessions: {} completed, {} failed",
        big.successes, r.resp_stats["completed"], r.resp_stats["failed"]
    ));
    let (before, during) = (&r.banner.before, &r.banner.during);
    out(&format!(
        "  banner phase minus the {} ms greeting delay, last probe of each spec: p50 {:.3} / p99 {:.3} / max {:.3} ms before any scrape; p50 {:.3} / p99 {:.3} / max {:.3} ms for probes that overlapped the scrapes",
        plan.fleet_banner_ms,
        percentile(before, 50.0),
        percentile(before, 99.0),
        before.last().copied().unwrap_or(f64::NAN),
        percentile(during, 50.0),
        percentile(during, 99.0),
        during.last().copied().unwrap_or(f64::NAN),
    ));
    out(&format!(
        "  (the responder's own lateness writing the greeting, {} connections in the window: p50 {:.3} ms, p99 {:.3} ms; it uses tokio's 1-ms timer)",
        r.greeting_late_ms.len(),
        percentile(&r.greeting_late_ms, 50.0),
        percentile(&r.greeting_late_ms, 99.0)
    ));
}

/// The `/metrics` latency table, its growth, and the extrapolation to 10,000 specs.
fn print_curve(plan: &Plan, r: &Results) {
    out(&format!("  /metrics latency, median of {} scrapes:", plan.scrapes));
    out(&format!(
        "    {:>7} {:>9} {:>12} {:>10} {:>10} {:>16} {:>14}   {:>11} {:>10} {:>14}",
        "specs",
        "series",
        "bytes",
        "median ms",
        "max ms",
        "ms/1000 series",
        "CPU ms/scrape",
        "gzip bytes",
        "gzip ms",
        "gzip CPU ms"
    ));
    for c in &r.curve {
        out(&format!(
            "    {:>7} {:>9} {:>12} {:>10.1} {:>10.1} {:>16.3} {:>14.1}   {:>11} {:>10.1} {:>14.1}",
            c.specs,
            c.series,
            c.bytes,
            c.median_ms,
            c.max_ms,
            c.ms_per_1000_series(),
            c.cpu_ms_per_scrape,
            c.gzip_bytes,
            c.gzip_median_ms,
            c.gzip_cpu_ms_per_scrape
        ));
    }
    if let Some(c) = r.curve.last() {
        if let Some(bytes) = c.history_bytes {
            out(&format!(
                "    recent-result histories at {} specs: {:.2} MiB ({:.0} bytes per spec; default bounds, 30 results + 10 failures of 12 bytes)",
                c.specs,
                bytes / 1048576.0,
                bytes / c.specs.max(1) as f64
            ));
        }
        out(&format!(
            "    gzip at {} specs: {:.1}x fewer bytes ({} -> {}), CPU per scrape {:.2}x the plain one, latency {:.2}x (on loopback)",
            c.specs,
            c.bytes as f64 / c.gzip_bytes.max(1) as f64,
            c.bytes,
            c.gzip_bytes,
            c.gzip_cpu_ms_per_scrape / c.cpu_ms_per_scrape.max(1e-9),
            c.gzip_median_ms / c.median_ms.max(1e-9)
        ));
    }
    let g = &r.growth;
    out(&format!(
        "    growth exponent (log time / log series) between neighbouring sizes: {}; at the largest sizes {:.2}: {}",
        g.slopes.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", "),
        g.last_slope,
        if g.linear { "roughly linear in the series count" } else { "NOT linear in the series count" }
    ));
    if g.extrapolated {
        out(&format!(
            "    at 10,000 specs ({:.0} series): {:.0} ms, EXTRAPOLATED from {} specs at {:.3} ms per 1,000 series",
            g.series_per_spec * 10_000.0,
            g.metrics_10k_ms,
            r.n,
            r.big().ms_per_1000_series()
        ));
    }
}

fn record_verdicts(plan: &Plan, r: &Results, report: &mut Report) {
    let (n, interval) = (r.n, r.interval);
    let scale_note = if plan.quick || n != 10_000 || interval != 60 {
        format!(" [{n} specs @ {interval} s]")
    } else {
        String::new()
    };
    let cpu_avg = r.cpu.avg;
    report.verdict(
        &format!("fleet CPU average{scale_note}"),
        format!("{:.1}% of a core", cpu_avg * 100.0),
        "< 25%",
        Some(cpu_avg < 0.25),
    );
    let rss_steady = mib(r.fleet.rss_window_end);
    report.verdict(
        &format!("RSS, steady, before any scrape{scale_note}"),
        format!("{rss_steady:.1} MiB"),
        "< 150 MiB",
        Some(rss_steady < 150.0),
    );
    let rss_scraped = mib(r.rss_scraped());
    report.verdict(
        &format!("RSS after /metrics scrapes{scale_note}"),
        format!("{rss_scraped:.1} MiB"),
        "< 150 MiB",
        Some(rss_scraped < 150.0),
    );
    let s = &r.starts;
    report.verdict(
        &format!("probe starts: max second / mean{scale_note}"),
        format!("{:.2} ({:.0} / {:.1})", s.spread, s.max, s.mean),
        "<= 2.0",
        Some(s.spread <= 2.0),
    );
    report.info(
        &format!("fleet: banner error p99, probes during scrapes{scale_note}"),
        format!(
            "{:.1} ms (before: {:.2} ms)",
            percentile(&r.banner.during, 99.0),
            percentile(&r.banner.before, 99.0)
        ),
    );
    let g = &r.growth;
    report.verdict(
        &format!("/metrics at 10,000 specs{}", if g.extrapolated { " (extrapolated)" } else { "" }),
        format!("{:.0} ms", g.metrics_10k_ms),
        "< 250 ms",
        Some(g.metrics_10k_ms < 250.0),
    );
}

impl Results {
    fn json(&self, plan: &Plan) -> Value {
        let (fleet, cpu, s, g, big) = (&self.fleet, &self.cpu, &self.starts, &self.growth, self.big());
        let (before, during) = (&self.banner.before, &self.banner.during);
        json!({
            "specs": self.n, "interval_s": self.interval, "window_s": cpu.window_s, "tls": plan.fleet_tls,
            "banner_delay_ms": plan.fleet_banner_ms, "reply_delay_ms": plan.fleet_reply_ms,
            "listeners": self.listeners, "addresses": plan.fleet_addrs,
            "ready_after_s": fleet.ready_after, "startup_cpu_peak_cores": cpu.startup_peak,
            "cpu_avg_cores": cpu.avg, "cpu_peak_cores": cpu.peak, "cpu_per_second": cpu.per_second,
            "scheduled_cpu_per_probe_us": self.sched_cpu_per_probe_us,
            "responder_cpu_avg_cores": cpu.responder_avg, "machine_busy_fraction": cpu.machine_busy,
            "rss_window_end_kib": fleet.rss_window_end, "rss_window_max_kib": cpu.rss_max,
            "rss_per_spec_kib": fleet.rss_window_end as f64 / self.n as f64,
            "rss_marginal_per_spec_kib": self.marginal_kib_per_spec(),
            "vmhwm_window_end_kib": fleet.hwm_window_end, "rss_after_scrapes_kib": big.rss_after_kib,
            "rss_after_scrapes_settled_kib": self.memory.rss_settled, "vmhwm_end_kib": self.memory.hwm_end,
            "starts_per_second": s.counts, "starts_mean": s.mean, "starts_max": s.max,
            "starts_min": s.min, "starts_max_over_mean": s.spread, "expected_rate": s.expected_rate,
            "successes_last_round": big.successes,
            "banner_error_before_scrapes_ms": {"p50": percentile(before, 50.0), "p99": percentile(before, 99.0), "max": before.last()},
            "banner_error_during_scrapes_ms": {"p50": percentile(during, 50.0), "p99": percentile(during, 99.0), "max": during.last()},
            "responder_greeting_late_ms": {"p50": percentile(&self.greeting_late_ms, 50.0), "p99": percentile(&self.greeting_late_ms, 99.0)},
            "metrics_curve": self.curve.iter().map(Scrapes::json).collect::<Vec<_>>(),
            "metrics_10k_ms": g.metrics_10k_ms, "metrics_10k_extrapolated": g.extrapolated,
            "series_per_spec": g.series_per_spec, "linear": g.linear, "growth_exponents": g.slopes,
            "probe_future_bytes": self.future_bytes,
            "responder": self.resp_stats,
        })
    }
}

// --- sampling and scraping ---------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Sample {
    t_ns: u64,
    ticks: u64,
    rss_kib: u64,
    responder_ticks: u64,
    sys_busy: u64,
    sys_total: u64,
}

fn take_sample(pid: u32, responder_pid: u32) -> Sample {
    let (sys_busy, sys_total) = sys::system_jiffies().unwrap_or((0, 0));
    Sample {
        t_ns: sys::mono_ns(),
        ticks: sys::proc_ticks(pid).unwrap_or(0),
        rss_kib: sys::proc_status_kib(pid, "VmRSS").unwrap_or(0),
        responder_ticks: sys::proc_ticks(responder_pid).unwrap_or(0),
        sys_busy,
        sys_total,
    }
}

/// Samples a process every second on a thread of its own, for at most `limit`.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32, responder_pid: u32, limit: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), samples.clone());
        let handle = thread::spawn(move || {
            let t0 = Instant::now();
            let mut k = 0u32;
            while !s.load(Ordering::Relaxed) && t0.elapsed() < limit {
                v.lock().expect("samples").push(take_sample(pid, responder_pid));
                k += 1;
                let next = t0 + Duration::from_secs(u64::from(k));
                while Instant::now() < next && !s.load(Ordering::Relaxed) {
                    thread::sleep(
                        Duration::from_millis(20).min(next.saturating_duration_since(Instant::now())),
                    );
                }
            }
        });
        Sampler { stop, samples, handle: Some(handle) }
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.samples.lock().expect("samples").clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Scrapes {
    specs: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    series: usize,
    bytes: usize,
    cpu_ms_per_scrape: f64,
    /// `smtp_exporter_history_bytes` at the last scrape: what the recent-result histories hold.
    history_bytes: Option<f64>,
    /// The same scrapes with `Accept-Encoding: gzip`, as Prometheus asks.
    gzip_median_ms: f64,
    gzip_bytes: usize,
    gzip_cpu_ms_per_scrape: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    successes: usize,
    /// Banner phase of each spec's last probe, from the first scrape (probes that ran
    /// before any scrape) and from the last one (probes that ran during the scrapes).
    banner_before_s: Vec<f64>,
    banner_during_s: Vec<f64>,
}

/// Series count, `smtp_probe_success 1` count, and banner phase values of an exposition.
fn parse_exposition(text: &str) -> (usize, usize, Vec<f64>) {
    let mut series = 0;
    let mut successes = 0;
    let mut banner_s = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        series += 1;
        if line.starts_with("smtp_probe_success{") && line.ends_with(" 1") {
            successes += 1;
        } else if line.starts_with("smtp_probe_phase_duration_seconds{") && line.contains("phase=\"banner\"")
        {
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                banner_s.push(v);
            }
        }
    }
    (series, successes, banner_s)
}

impl Scrapes {
    fn ms_per_1000_series(&self) -> f64 {
        self.median_ms / (self.series.max(1) as f64 / 1000.0)
    }

    fn json(&self) -> Value {
        json!({
            "specs": self.specs, "median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
            "series": self.series, "bytes": self.bytes, "ms_per_1000_series": self.ms_per_1000_series(),
            "cpu_ms_per_scrape": self.cpu_ms_per_scrape, "rss_before_kib": self.rss_before_kib,
            "gzip_median_ms": self.gzip_median_ms, "gzip_bytes": self.gzip_bytes, "history_bytes": self.history_bytes,
            "gzip_cpu_ms_per_scrape": self.gzip_cpu_ms_per_scrape,
            "rss_after_kib": self.rss_after_kib, "probe_success_series_at_1": self.successes,
        })
    }
}

/// `n` timed scrapes of /metrics (after one untimed); `busy_ticks_per_s` is the
/// exporter's CPU rate without scrapes, subtracted from the scrape CPU.
fn scrape(ctx: &Ctx, server: &Server, specs: usize, n: usize, busy_ticks_per_s: f64) -> Res<Scrapes> {
    let mut http = Http::new(server.addr, Duration::from_secs(120));
    let rss_before_kib = server.rss_kib();
    let first = http.get("/metrics")?;
    let (_, _, banner_before_s) = parse_exposition(&String::from_utf8_lossy(&first.body));
    drop(first);
    let mut lat = Vec::new();
    let mut last = Vec::new();
    let t0 = server.ticks();
    let w0 = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        let r = http.get("/metrics")?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        if r.status != 200 {
            return Err(format!("/metrics answered {}", r.status));
        }
        last = r.body;
    }
    let cpu_ticks = server.ticks().saturating_sub(t0) as f64 - busy_ticks_per_s * w0.elapsed().as_secs_f64();
    let (series, successes, banner_during_s) = parse_exposition(&String::from_utf8_lossy(&last));
    let lat = sorted(lat);
    // The same number of scrapes, gzipped.
    let mut gzip_lat = Vec::new();
    let mut gzip_bytes = 0;
    let t1 = server.ticks();
    let w1 = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        let r = http.request("GET", "/metrics", &[("Accept-Encoding", "gzip")], b"")?;
        gzip_lat.push(s.elapsed().as_secs_f64() * 1e3);
        if r.status != 200 {
            return Err(format!("/metrics with Accept-Encoding: gzip answered {}", r.status));
        }
        if r.header("content-encoding") != Some("gzip") {
            // An exporter from before gzip (an A/B run against an older build).
            gzip_lat.clear();
            gzip_lat.push(f64::NAN);
            break;
        }
        gzip_bytes = r.body.len();
    }
    let gzip_ticks = server.ticks().saturating_sub(t1) as f64 - busy_ticks_per_s * w1.elapsed().as_secs_f64();
    let gzip_lat = sorted(gzip_lat);
    Ok(Scrapes {
        specs,
        median_ms: percentile(&lat, 50.0),
        min_ms: lat[0],
        max_ms: lat[lat.len() - 1],
        series,
        history_bytes: String::from_utf8_lossy(&last)
            .lines()
            .find_map(|l| l.strip_prefix("smtp_exporter_history_bytes ").and_then(|v| v.trim().parse().ok())),
        bytes: last.len(),
        cpu_ms_per_scrape: (cpu_ticks.max(0.0) / ctx.tck) * 1e3 / n as f64,
        gzip_median_ms: percentile(&gzip_lat, 50.0),
        gzip_bytes,
        gzip_cpu_ms_per_scrape: (gzip_ticks.max(0.0) / ctx.tck) * 1e3 / n as f64,
        rss_before_kib,
        rss_after_kib: server.rss_kib(),
        successes,
        banner_before_s,
        banner_during_s,
    })
}

/// The size of the future `probe::run` returns for a fleet spec (never polled).
fn probe_future_bytes(ctx: &Ctx, tls: bool) -> Option<usize> {
    let yaml = format!(
        "modules:\n{}targets:\n  - {{ name: x, host: 127.0.0.1, ports: [{{ port: 25, module: fleet }}] }}\n",
        module_yaml(ctx, "fleet", tls, 10)
    );
    let config = smtp_exporter::config::parse(&yaml, "size check").ok()?;
    let spec = &config.schedule.first()?.spec;
    let future = smtp_exporter::probe::run(spec);
    Some(std::mem::size_of_val(&future))
}
