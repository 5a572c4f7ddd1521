//! The processes under test, the exporter and blackbox_exporter: their configurations,
//! starting them on a free loopback port, waiting until they are healthy or ready, and
//! driving probes through their `/probe` with testkit's HTTP client.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use testkit::http::Client as Http;

use crate::child::{log_tail, Proc};
use crate::setup::Ctx;
use crate::{sys, Context, Res};

/// A loopback port that was free a moment ago.
fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ctx("free port")?;
    Ok(l.local_addr().ctx("free port")?.port())
}

/// Polls `path` until it answers 200, the process dies, or `limit` passes.
fn wait_http_ok(proc: &mut Proc, addr: SocketAddr, path: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if !proc.running() {
            return false;
        }
        let mut http = Http::new(addr, Duration::from_secs(2));
        if matches!(http.get(path), Ok(r) if r.status == 200) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A running exporter or blackbox_exporter, healthy, on a loopback port.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn ticks(&self) -> u64 {
        sys::proc_ticks(self.pid()).unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        sys::proc_status_kib(self.pid(), "VmRSS").unwrap_or(0)
    }
}

/// Starts a server (exporter or blackbox) on a free loopback port and waits for /-/healthy.
pub fn start_server(ctx: &Ctx, name: &str, bin: &Path, config_text: &str) -> Res<Server> {
    let config = ctx.tmp.join(format!("{name}.yml"));
    std::fs::write(&config, config_text).ctx(&config.display().to_string())?;
    let log = ctx.tmp.join(format!("{name}.log"));
    for attempt in 0..3 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let logf = std::fs::File::create(&log).ctx("log file")?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().ctx("log file")?)
            .stderr(logf);
        let mut proc = Proc::spawn(name, cmd)?;
        if wait_http_ok(&mut proc, addr, "/-/healthy", Duration::from_secs(30)) {
            return Ok(Server { proc, addr });
        }
        proc.stop();
        if attempt == 2 {
            return Err(format!("{name} did not become healthy; its log ends with:\n    {}", log_tail(&log)));
        }
    }
    unreachable!("the loop returns on its last attempt")
}

pub fn start_exporter(ctx: &Ctx, name: &str, yaml: &str) -> Res<Server> {
    start_server(ctx, name, &ctx.exporter_bin, yaml)
}

/// Waits until every spec has been probed once (/-/ready); returns how long that took.
pub fn wait_ready(server: &mut Server, limit: Duration) -> Res<Duration> {
    let t0 = Instant::now();
    let until = t0 + limit;
    let mut http = Http::new(server.addr, Duration::from_secs(10));
    while Instant::now() < until {
        if !server.proc.running() {
            return Err("the exporter exited".into());
        }
        if matches!(http.get("/-/ready"), Ok(r) if r.status == 200) {
            return Ok(t0.elapsed());
        }
        thread::sleep(Duration::from_millis(250));
    }
    Err(format!("not ready after {:.0} s", limit.as_secs_f64()))
}

/// The credentials of every AUTH in the bench: the exporter's modules, the baseline client
/// and the responder, which checks them.
pub const USERNAME: &str = "bench@example.test";
pub const PASSWORD: &str = "bench-password";

/// A path as a double-quoted string, valid in YAML and JSON.
pub fn quoted(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

/// A module: STARTTLS required + AUTH PLAIN with the test CA, or plain SMTP.
pub fn module_yaml(ctx: &Ctx, name: &str, tls: bool, timeout_s: u64) -> String {
    if tls {
        format!(
            "  {name}:\n    tls: starttls_required\n    timeout: {timeout_s}s\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    auth:\n      username: {USERNAME}\n      password: {PASSWORD}\n      mechanism: plain\n",
            quoted(&ctx.certs.ca)
        )
    } else {
        format!("  {name}:\n    tls: none\n    timeout: {timeout_s}s\n")
    }
}

/// An exporter configuration: `specs` are (target name, address) probed with `module`.
pub fn exporter_yaml(modules: &str, module: &str, interval_s: u64, specs: &[(String, SocketAddr)]) -> String {
    let mut y =
        format!("interval: {interval_s}s\nmodules:\n{modules}probe_endpoint:\n  allow_any_target: true\n");
    if specs.is_empty() {
        y.push_str("targets: []\n");
    } else {
        y.push_str("targets:\n");
        for (name, addr) in specs {
            y.push_str(&format!(
                "  - {{ name: {name}, host: {}, ports: [{{ port: {}, module: {module} }}] }}\n",
                addr.ip(),
                addr.port()
            ));
        }
    }
    y
}

pub struct Driven {
    pub ok: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    pub wall: Duration,
}

pub fn probe_succeeded(body: &str) -> bool {
    body.lines()
        .any(|l| (l.starts_with("smtp_probe_success") || l.starts_with("probe_success")) && l.ends_with(" 1"))
}

fn failure_excerpt(body: &str) -> String {
    body.lines()
        .find(|l| l.starts_with("smtp_probe_failure_info{") || l.starts_with("probe_failed_due_to"))
        .unwrap_or_else(|| body.lines().find(|l| !l.starts_with('#')).unwrap_or(""))
        .chars()
        .take(300)
        .collect()
}

/// `n` GETs of `path`, `concurrency` at a time, each thread on its own keep-alive
/// connection; a response counts as a success when the probe it reports succeeded.
pub fn drive(addr: SocketAddr, path: &str, n: usize, concurrency: usize) -> Driven {
    let next = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let first_failure = Mutex::new(None::<String>);
    let t0 = Instant::now();
    thread::scope(|s| {
        for _ in 0..concurrency.max(1) {
            s.spawn(|| {
                let mut http = Http::new(addr, Duration::from_secs(30));
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let problem = match http.get(path) {
                        Ok(r) if r.status == 200 && probe_succeeded(r.text()) => None,
                        Ok(r) => Some(format!("HTTP {}: {}", r.status, failure_excerpt(r.text()))),
                        Err(e) => Some(e),
                    };
                    match problem {
                        None => ok.fetch_add(1, Ordering::Relaxed),
                        Some(p) => {
                            first_failure.lock().expect("lock").get_or_insert(p);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    });
    Driven {
        ok: ok.into_inner(),
        failed: failed.into_inner(),
        first_failure: first_failure.into_inner().expect("lock"),
        wall: t0.elapsed(),
    }
}
