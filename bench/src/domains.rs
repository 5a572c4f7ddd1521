//! Section 4, domains: a fleet of mail domains walked through a real name server (knot),
//! against the same addresses probed as plain host-and-port targets, in the same run.
//!
//! knot serves a zone of `domains` names, each with two MX, each MX with an A record of its
//! own (127.2.x.y) and the AAAA ::1; the responder answers on one port of every one of
//! those addresses. First an exporter probes the 4 × `domains` addresses as static targets
//! (IP literals, no DNS): the baseline. Then an exporter walks the domains (MX, then A and
//! AAAA of every MX) and probes the same 4 × `domains` (MX, address) pairs. Each runs
//! until its first round is over, then a steady window of one interval measures its CPU
//! per probe and its RSS; knot's own counters give the DNS queries in the window, to
//! compare with one query per record per TTL.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::http::Client as Http;

use crate::child::{log_tail, Proc};
use crate::report::{out, progress, Report};
use crate::responder::{self, Responder};
use crate::setup::Ctx;
use crate::subjects::{start_exporter, Server};
use crate::{Context, Res};

/// Records per domain in the zone: one MX set, two A and two AAAA.
const RECORDS_PER_DOMAIN: f64 = 5.0;

pub fn section(ctx: &Ctx, report: &mut Report) -> Res<()> {
    let plan = &ctx.plan;
    let (n, interval) = (plan.domains, plan.domain_interval);
    out("");
    out(&format!(
        "== 4. Domains: {n} domains x 2 MX x 2 families ({} specs) at a {interval} s interval, DNS from knot (TTL {interval} s), plain SMTP, against the same {} addresses as static targets",
        4 * n,
        4 * n
    ));
    let knot = Knot::start(ctx, n, interval)?;
    let port = free_port()?;
    let addrs: Vec<String> = (0..2 * n).map(mx_addr).chain(std::iter::once("::1".to_owned())).collect();
    progress(&format!("domains: starting the responder on {} addresses, port {port}", addrs.len()));
    let group =
        responder::Group { addrs, per_addr: 1, port, banner_delay_us: 2_000, reply_delay_us: 0, tls: false };
    let _responder = Responder::start(ctx, "domain-responder", vec![group], false)?;

    let modules = "modules:\n  plain:\n    tls: none\n    timeout: 10s\n";
    let mut statics = format!("interval: {interval}s\n{modules}targets:\n");
    for d in 0..n {
        for (m, ip) in [(1, mx_addr(2 * d)), (2, mx_addr(2 * d + 1))] {
            for (family, address) in [("4", ip.as_str()), ("6", "::1")] {
                statics.push_str(&format!(
                    "  - {{ name: mx{m}-ip{family}.d{d}, host: \"{address}\", ports: [{{ port: {port}, module: plain }}] }}\n"
                ));
            }
        }
    }
    let baseline = measure(ctx, "domain-baseline", &statics, 4 * n, interval, None)?;

    let mut domains = format!(
        "interval: {interval}s\ndns:\n  nameservers: [\"127.0.0.1:{}\"]\n  min_ttl: 5s\n{modules}domains:\n",
        knot.port
    );
    // The walk itself, as before DANE: TLSA lookups off (they are measured next).
    let mut with_dane = domains.clone();
    for d in 0..n {
        domains.push_str(&format!(
            "  - {{ name: d{d}.bench.test, ports: [{{ port: {port}, module: plain }}], policy: {{ dane: false }} }}\n"
        ));
        with_dane.push_str(&format!(
            "  - {{ name: d{d}.bench.test, ports: [{{ port: {port}, module: plain }}] }}\n"
        ));
    }
    let walked = measure(ctx, "domain-exporter", &domains, 4 * n, interval, Some(&knot))?;
    // The default, with each MX's TLSA records looked up and validated on every walk. The
    // zone is unsigned and knot serves no root: every lookup also asks for the DS and
    // DNSKEY records that prove it insecure, which a recursive resolver would cache.
    let dane = measure(ctx, "domain-exporter-dane", &with_dane, 4 * n, interval, Some(&knot))?;

    let ratio = walked.cpu_per_probe_us / baseline.cpu_per_probe_us;
    let expected_qpm = n as f64 * RECORDS_PER_DOMAIN * 60.0 / interval as f64;
    let qpm = walked.dns_queries_per_minute.unwrap_or(f64::NAN);
    out(&format!(
        "  static targets (baseline): first round {:.1} s; CPU {:.1} us/probe over {:.0} probes; RSS {:.1} MiB",
        baseline.first_round_s,
        baseline.cpu_per_probe_us,
        baseline.probes,
        baseline.rss_kib as f64 / 1024.0
    ));
    out(&format!(
        "  domains walked:            first round {:.1} s; CPU {:.1} us/probe over {:.0} probes ({ratio:.2}x the baseline); RSS {:.1} MiB ({:+.1} MiB)",
        walked.first_round_s,
        walked.cpu_per_probe_us,
        walked.probes,
        walked.rss_kib as f64 / 1024.0,
        (walked.rss_kib as f64 - baseline.rss_kib as f64) / 1024.0
    ));
    out(&format!(
        "  DNS queries at knot: {qpm:.0} per minute in the window; one per record per TTL would be {expected_qpm:.0} ({:.2}x)",
        qpm / expected_qpm
    ));
    let dane_qpm = dane.dns_queries_per_minute.unwrap_or(f64::NAN);
    out(&format!(
        "  with DANE (the default): CPU {:.1} us/probe ({:.2}x the baseline, {:.2}x the walk without it); RSS {:.1} MiB; {dane_qpm:.0} DNS queries per minute ({:.2}x the walk's), the TLSA lookups and their DNSSEC proofs of an unsigned zone",
        dane.cpu_per_probe_us,
        dane.cpu_per_probe_us / baseline.cpu_per_probe_us,
        dane.cpu_per_probe_us / walked.cpu_per_probe_us,
        dane.rss_kib as f64 / 1024.0,
        dane_qpm / qpm
    ));
    report.verdict(
        "domain walk: CPU per probe vs the same addresses as static targets",
        format!("{ratio:.2}x"),
        "<= 1.5x",
        Some(ratio <= 1.5),
    );
    report.verdict(
        "domain walk: DNS queries per minute vs one per record per TTL",
        format!("{:.2}x ({qpm:.0} vs {expected_qpm:.0})", qpm / expected_qpm),
        "0.5x to 1.5x",
        Some((0.5..=1.5).contains(&(qpm / expected_qpm))),
    );
    report.json.insert(
        "domains".into(),
        json!({
            "domains": n,
            "specs": 4 * n,
            "interval_s": interval,
            "ttl_s": interval,
            "baseline": baseline.json(),
            "walked": walked.json(),
            "walked_with_dane": dane.json(),
            "cpu_ratio": ratio,
            "dns_queries_per_minute": qpm,
            "dns_queries_per_minute_one_per_record_per_ttl": expected_qpm,
        }),
    );
    Ok(())
}

/// The address of MX `i`: 127.2.0.1, 127.2.0.2, ... 127.2.0.250, 127.2.1.1, ...
fn mx_addr(i: usize) -> String {
    format!("127.2.{}.{}", i / 250, 1 + i % 250)
}

fn free_port() -> Res<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ctx("free port")?;
    Ok(listener.local_addr().ctx("free port")?.port())
}

/// What one exporter's steady window measured.
struct Measured {
    first_round_s: f64,
    probes: f64,
    cpu_per_probe_us: f64,
    rss_kib: u64,
    dns_queries_per_minute: Option<f64>,
}

impl Measured {
    fn json(&self) -> serde_json::Value {
        json!({
            "first_round_s": self.first_round_s,
            "probes_in_window": self.probes,
            "cpu_per_probe_us": self.cpu_per_probe_us,
            "rss_kib": self.rss_kib,
            "dns_queries_per_minute": self.dns_queries_per_minute,
        })
    }
}

/// Starts an exporter on `yaml`, waits until all `specs` have a result, then measures one
/// interval.
fn measure(
    ctx: &Ctx,
    name: &str,
    yaml: &str,
    specs: usize,
    interval: u64,
    knot: Option<&Knot>,
) -> Res<Measured> {
    progress(&format!("domains: starting {name} ({specs} specs)"));
    let started = Instant::now();
    let exporter = start_exporter(ctx, name, yaml)?;
    let limit = Duration::from_secs(interval * 3 + 120);
    loop {
        if probed(&exporter)?.0 >= specs {
            break;
        }
        if started.elapsed() > limit {
            return Err(format!("{name}: not every spec probed after {limit:?}"));
        }
        thread::sleep(Duration::from_secs(1));
    }
    let first_round_s = started.elapsed().as_secs_f64();
    progress(&format!(
        "domains: {name} probed every spec after {first_round_s:.1} s; measuring {interval} s"
    ));
    let (ticks0, probes0, queries0) =
        (exporter.ticks(), probed(&exporter)?.1, knot.map(Knot::queries).transpose()?);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(interval));
    let (ticks1, probes1, queries1) =
        (exporter.ticks(), probed(&exporter)?.1, knot.map(Knot::queries).transpose()?);
    let window = t0.elapsed().as_secs_f64();
    let probes = probes1 - probes0;
    Ok(Measured {
        first_round_s,
        probes,
        cpu_per_probe_us: (ticks1 - ticks0) as f64 / ctx.tck / probes.max(1.0) * 1e6,
        rss_kib: exporter.rss_kib(),
        dns_queries_per_minute: queries0.zip(queries1).map(|(a, b)| (b - a) as f64 * 60.0 / window),
    })
}

/// How many specs have a result, and the sum of `smtp_probes_total`.
fn probed(exporter: &Server) -> Res<(usize, f64)> {
    let response = Http::new(exporter.addr, Duration::from_secs(30)).get("/metrics")?;
    let (mut specs, mut total) = (0, 0.0);
    for line in response.text().lines() {
        if line.starts_with("smtp_probe_success{") {
            specs += 1;
        } else if let Some(rest) = line.strip_prefix("smtp_probes_total{") {
            total += rest.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    Ok((specs, total))
}

/// knotd serving the bench zone on a loopback port, stopped on drop.
struct Knot {
    _proc: Proc,
    port: u16,
    conf: std::path::PathBuf,
}

impl Knot {
    fn start(ctx: &Ctx, n: usize, ttl: u64) -> Res<Knot> {
        let dir = ctx.tmp.join("knot");
        std::fs::create_dir_all(&dir).ctx("knot directory")?;
        let zone = dir.join("bench.test.zone");
        let mut text = format!(
            "$ORIGIN bench.test.\n$TTL {ttl}\n@ SOA ns hostmaster 1 60 60 600 {ttl}\n@ NS ns\nns A 127.0.0.1\n"
        );
        for d in 0..n {
            for m in 1..=2 {
                text.push_str(&format!(
                    "d{d} MX {} mx{m}.d{d}\nmx{m}.d{d} A {}\nmx{m}.d{d} AAAA ::1\n",
                    10 * m,
                    mx_addr(2 * d + m - 1)
                ));
            }
        }
        std::fs::write(&zone, text).ctx("zone file")?;
        let port = free_udp_port()?;
        let conf = dir.join("knot.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "server:\n    user: root:root\n    rundir: \"{d}\"\n    pidfile: \"{d}/knot.pid\"\n    listen: 127.0.0.1@{port}\nlog:\n  - target: stderr\n    any: warning\ndatabase:\n    storage: \"{d}\"\ncontrol:\n    listen: \"{d}/knot.sock\"\nmod-stats:\n  - id: counts\n    request-protocol: on\ntemplate:\n  - id: default\n    global-module: mod-stats/counts\nzone:\n  - domain: bench.test\n    file: \"{}\"\n    zonefile-load: whole\n    journal-content: none\n    zonefile-sync: -1\n",
                zone.display()
            ),
        )
        .ctx("knot.conf")?;
        let log = dir.join("knot.log");
        let mut cmd = Command::new("knotd");
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).ctx("knot log")?);
        let proc = Proc::spawn("knotd (apt-get install knot)", cmd)?;
        let knot = Knot { _proc: proc, port, conf };
        let until = Instant::now() + Duration::from_secs(30);
        while knot.queries().is_err() {
            if Instant::now() > until {
                return Err(format!("knotd did not come up: {}", log_tail(&log)));
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(knot)
    }

    /// Queries knot has answered since it started (its mod-stats counters).
    fn queries(&self) -> Res<u64> {
        let out = Command::new("knotc").arg("-c").arg(&self.conf).arg("stats").output().ctx("knotc stats")?;
        if !out.status.success() {
            return Err(format!("knotc stats: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| l.starts_with("mod-stats.request-protocol["))
            .filter_map(|l| l.rsplit_once(" = ").and_then(|(_, v)| v.trim().parse::<u64>().ok()))
            .sum())
    }
}

fn free_udp_port() -> Res<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").ctx("free UDP port")?;
    Ok(socket.local_addr().ctx("free UDP port")?.port())
}
