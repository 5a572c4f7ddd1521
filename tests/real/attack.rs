//! Attacks on the release binary (issue 12), each bounded in count and time and stopping by
//! itself: reload storms against one concurrency limit, hostile configurations, clients
//! that never read, slowloris, a listener after a module's credentials, and forged reloads.
//! The HTTP attacks report the scrape time under attack against the
//! time without it, and the exporter's RSS and open descriptors before, during and after.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

/// Raises this process's open-file limit to its hard limit (the attacks open a thousand
/// sockets).
fn raise_open_files() {
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The exporter's resident memory (MiB) and open descriptors.
fn usage(pid: u32) -> (f64, usize) {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss_kib / 1024.0, fds)
}

/// How long one scrape of /metrics takes on a fresh connection.
fn scrape_time(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let response = testkit::http::Client::new(addr, Duration::from_secs(30)).get("/metrics")?;
    if response.status != 200 {
        return Err(format!("/metrics answered {}", response.status));
    }
    Ok(started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A loopback port that accepts connections and holds them without a word until the
/// client closes, counting how many are open at once.
struct HoldingPort {
    port: u16,
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HoldingPort {
    fn start() -> Result<HoldingPort, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (most, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (most_seen, stopping) = (most.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                while let Ok((stream, _)) = listener.accept() {
                    let _ = stream.set_nonblocking(true);
                    open.push(stream);
                }
                // Drop the connections their clients closed.
                open.retain(|s| {
                    let mut byte = [0u8; 1];
                    !matches!((&*s).read(&mut byte), Ok(0))
                });
                most_seen.fetch_max(open.len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Ok(HoldingPort { port, most, stop })
    }
}

impl Drop for HoldingPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn post_reload(addr: SocketAddr) -> Result<(u16, String, Duration), String> {
    let started = Instant::now();
    let response =
        testkit::http::Client::new(addr, Duration::from_secs(10)).request("POST", "/-/reload", &[], b"")?;
    Ok((response.status, response.text().to_owned(), started.elapsed()))
}

fn fleet(name: &str, count: usize, port: u16, extra: &str) -> String {
    let mut yaml = format!("interval: 60s\n{extra}modules:\n  m: {{ tls: none, timeout: 2s }}\ntargets:\n");
    for i in 0..count {
        yaml.push_str(&format!(
            "  - {{ name: {name}{i}, host: 127.0.0.1, ports: [{{ port: {port}, module: m }}] }}\n"
        ));
    }
    yaml
}

/// Finding 1: 5,000 specs to a port that never answers, max_concurrency 64, 100 reloads,
/// under a 1,024 open-file limit: never more than 64 probes open, descriptors bounded, and
/// no spec blamed as unreachable.
pub fn reloads_keep_one_concurrency_limit(mta: &Mta) -> Check {
    let hold = HoldingPort::start()?;
    let path = mta.state_dir.join("attack-reloads.yml");
    std::fs::write(&path, fleet("s", 5000, hold.port, "max_concurrency: 64\n")).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &["--web.enable-lifecycle".into()], Some(1024))?;
    let pid = exporter.child.id();
    std::thread::sleep(Duration::from_millis(1500));
    let before = usage(pid);
    let mut most_fds = before.1;
    let started = Instant::now();
    for i in 0..100 {
        let (status, body, _) = post_reload(exporter.addr)?;
        if status != 200 {
            return Err(format!("reload {i}: {status} {body}"));
        }
        most_fds = most_fds.max(usage(pid).1);
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let after = usage(pid);
    let most = hold.most.load(Ordering::Relaxed);
    let samples = parse_exposition(&exporter.exposition()?);
    let blamed = find(&samples, "smtp_port_state", &[("state", "unreachable")])
        .iter()
        .filter(|s| s.value == 1.0)
        .count();
    let local =
        find(&samples, "smtp_exporter_probes_failed_locally_total", &[]).first().map_or(0.0, |s| s.value);
    println!(
        "    100 reloads in {:.1} s: at most {most} probes open (limit 64); exporter fds {} before, {most_fds} at most, {} after; RSS {:.0} -> {:.0} MiB; unreachable {blamed}, local failures {local}",
        took.as_secs_f64(), before.1, after.1, before.0, after.0
    );
    if most > 64 || most == 0 {
        return Err(format!("{most} probes were open at once with max_concurrency 64"));
    }
    if most_fds > 64 + 100 || blamed > 0 || local > 0.0 {
        return Err(format!("fds {most_fds}, unreachable {blamed}, local failures {local}"));
    }
    Ok(())
}

/// Finding 2 (and 7): each hostile configuration is refused by `--config.check` within
/// seconds, and a reload with it keeps the running exporter on its old configuration, with
/// bounded memory.
pub fn bad_reloads_keep_the_old_configuration(mta: &Mta) -> Check {
    let path = mta.state_dir.join("attack-bad.yml");
    let good = format!(
        "modules:\n  m: {{ tls: none, timeout: 2s }}\ntargets:\n  - {{ name: kept, host: 127.0.0.1, ports: [{{ port: {}, module: m }}] }}\n",
        free_port()
    );
    std::fs::write(&path, &good).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &["--web.enable-lifecycle".into()], None)?;
    exporter.wait_ready(&path, Duration::from_secs(10))?;
    let pid = exporter.child.id();
    let big = "x".repeat(1_000_000);
    let mut alias_bomb = format!("a: &big \"{big}\"\nmodules:\n");
    for i in 0..1000 {
        alias_bomb.push_str(&format!("  m{i}: {{ tls: none, ehlo_hostname: *big }}\n"));
    }
    let deep = format!("interval: {}{}\n", "[".repeat(250_000), "]".repeat(250_000));
    let hostile: Vec<(&str, String)> = vec![
        ("max_concurrency 2^61", format!("max_concurrency: 2305843009213693952\n{good}")),
        ("interval of 5124095576030431h", format!("interval: 5124095576030431h\n{good}")),
        ("timeout of 5124095576030431h", good.replace("timeout: 2s", "timeout: 5124095576030431h")),
        ("1 MB string aliased 1,000 times", alias_bomb),
        ("500 KB of nested brackets", deep),
        (
            "/dev/zero as password_file",
            good.replace("tls: none,", "tls: implicit, auth: { username: u, password_file: /dev/zero },"),
        ),
        ("an empty file", String::new()),
        ("comments only", "# nothing\n".into()),
        ("a module defined twice", good.replace("modules:\n", "modules:\n  m: { tls: implicit }\n")),
        ("interval 1ms", format!("interval: 1ms\n{good}")),
        ("17 MB of YAML", format!("{good}# {}\n", "y".repeat(17_000_000))),
    ];
    let mut most_rss: f64 = 0.0;
    for (what, text) in &hostile {
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        answer_refused(&path, what)?;
        let (status, body, took) = post_reload(exporter.addr)?;
        most_rss = most_rss.max(usage(pid).0);
        if status != 500 || took > Duration::from_secs(3) {
            return Err(format!("{what}: reload answered {status} in {took:?}: {body}"));
        }
        still_serving_the_old_config(&exporter, what)?;
    }
    // A FIFO in place of the file: refused at once, not waited on.
    std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    run("mkfifo", &[&path.display().to_string()])?;
    answer_refused(&path, "a FIFO")?;
    let (status, body, took) = post_reload(exporter.addr)?;
    if status != 500 || took > Duration::from_secs(3) || !body.contains("not a regular file") {
        return Err(format!("a FIFO: reload answered {status} in {took:?}: {body}"));
    }
    std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    std::fs::write(&path, &good).map_err(|e| e.to_string())?;
    let (status, _, _) = post_reload(exporter.addr)?;
    let reloaded =
        one(&parse_exposition(&exporter.exposition()?), "smtp_exporter_config_last_reload_successful", &[])?
            .value;
    println!("    {} hostile configurations and a FIFO refused; RSS at most {most_rss:.0} MiB; the good file reloads again ({status})", hostile.len());
    if status != 200 || reloaded != 1.0 || most_rss > 150.0 {
        return Err(format!(
            "after the attacks: reload {status}, reload_successful {reloaded}, RSS {most_rss:.0} MiB"
        ));
    }
    Ok(())
}

/// `--config.check` refuses `path` with exit status 1 within 5 s.
fn answer_refused(path: &Path, what: &str) -> Check {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtp_exporter"))
        .args(["--config.check", &format!("--config.file={}", path.display())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return if status.code() == Some(1) && err.starts_with("configuration is invalid:") {
                Ok(())
            } else {
                Err(format!("{what}: --config.check exited {status}: {err}"))
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("{what}: --config.check still running after 5 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn still_serving_the_old_config(exporter: &Exporter, what: &str) -> Check {
    let (health, _) = http_get(exporter.addr, "/-/healthy")?;
    let samples = parse_exposition(&exporter.exposition()?);
    let reload_ok = one(&samples, "smtp_exporter_config_last_reload_successful", &[])?.value;
    let kept = find(&samples, "smtp_probe_success", &[("target", "kept")]).len();
    if health != 200 || reload_ok != 0.0 || kept != 1 {
        return Err(format!(
            "after {what}: health {health}, reload_successful {reload_ok}, kept spec series {kept}"
        ));
    }
    Ok(())
}

/// An exporter with a sizable exposition (2,000 specs, refused at once) for the HTTP
/// attacks, and the scrape time without an attack (median of 5).
fn scrape_target(mta: &Mta, name: &str) -> Result<(Exporter, Duration), String> {
    let path = mta.state_dir.join(name);
    std::fs::write(&path, fleet("r", 2000, free_port(), "")).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    exporter.wait_ready(&path, Duration::from_secs(30))?;
    let quiet = median((0..5).map(|_| scrape_time(exporter.addr)).collect::<Result<_, _>>()?);
    Ok((exporter, quiet))
}

/// Scrapes once a second for `seconds` while an attack runs; returns the scrape times and
/// the exporter's peak RSS and descriptors.
fn scrape_during(exporter: &Exporter, seconds: u64) -> Result<(Vec<Duration>, (f64, usize)), String> {
    let mut times = Vec::new();
    let mut peak = (0.0f64, 0usize);
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        times.push(scrape_time(exporter.addr)?);
        let now = usage(exporter.child.id());
        peak = (peak.0.max(now.0), peak.1.max(now.1));
    }
    Ok((times, peak))
}

fn report(
    what: &str,
    quiet: Duration,
    times: &[Duration],
    before: (f64, usize),
    peak: (f64, usize),
    after: (f64, usize),
) {
    let worst = times.iter().max().copied().unwrap_or_default();
    println!(
        "    {what}: scrape {:.1} ms quiet, median {:.1} ms / worst {:.1} ms under attack (x{:.1}); RSS {:.0} / {:.0} / {:.0} MiB and fds {} / {} / {} before / during / after",
        quiet.as_secs_f64() * 1e3,
        median(times.to_vec()).as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        median(times.to_vec()).as_secs_f64() / quiet.as_secs_f64().max(1e-6),
        before.0, peak.0, after.0, before.1, peak.1, after.1
    );
}

/// Finding 3: 256 connections send pipelined requests for /metrics and never read.
/// Scrapes are still answered within a second, and memory stays bounded.
pub fn clients_that_never_read(mta: &Mta) -> Check {
    raise_open_files();
    let (exporter, quiet) = scrape_target(mta, "attack-nonreaders.yml")?;
    let before = usage(exporter.child.id());
    let mut attackers = Vec::new();
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20);
    for _ in 0..256 {
        let mut s = TcpStream::connect(exporter.addr).map_err(|e| e.to_string())?;
        let _ = s.write_all(requests.as_bytes());
        attackers.push(s);
    }
    let (times, peak) = scrape_during(&exporter, 14)?;
    drop(attackers);
    std::thread::sleep(Duration::from_secs(2));
    let after = usage(exporter.child.id());
    report("256 clients that never read", quiet, &times, before, peak, after);
    let worst = times.iter().max().copied().unwrap_or_default();
    if worst > Duration::from_secs(1) || peak.0 > before.0 + 200.0 {
        return Err(format!("worst scrape {worst:?}, RSS {:.0} -> {:.0} MiB", before.0, peak.0));
    }
    Ok(())
}

/// Finding 4: 1,000 slowloris connections, one header byte a second each. Scrapes are
/// still answered within a second.
pub fn slowloris(mta: &Mta) -> Check {
    raise_open_files();
    let (exporter, quiet) = scrape_target(mta, "attack-slowloris.yml")?;
    let before = usage(exporter.child.id());
    let stop = Arc::new(AtomicBool::new(false));
    let addr = exporter.addr;
    let stopping = stop.clone();
    let attacker = std::thread::spawn(move || {
        let mut open: VecDeque<TcpStream> = VecDeque::new();
        let deadline = Instant::now() + Duration::from_secs(16);
        while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
            // Keep 1,000 open: replace the ones the exporter closed.
            while open.len() < 1000 {
                match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Ok(mut s) => {
                        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
                        let _ = s.set_nonblocking(true);
                        open.push_back(s);
                    }
                    Err(_) => break,
                }
            }
            open.retain_mut(|s| s.write_all(b"X").is_ok());
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let during = scrape_during(&exporter, 14);
    stop.store(true, Ordering::Relaxed);
    let _ = attacker.join();
    let (times, peak) = during?;
    std::thread::sleep(Duration::from_secs(2));
    let after = usage(exporter.child.id());
    report("1,000 slowloris connections", quiet, &times, before, peak, after);
    let worst = times.iter().max().copied().unwrap_or_default();
    if worst > Duration::from_secs(1) {
        return Err(format!("worst scrape {worst:?} under slowloris"));
    }
    Ok(())
}

/// Finding 5: a hostile listener on an allowed host gets no connection from `/probe` with
/// a module that carries credentials, and a hostile server the configuration does pair with
/// such a module, but whose certificate does not verify, gets no AUTH; the real Postfix
/// the module is meant for still authenticates it.
pub fn credentials_go_only_where_configured(mta: &Mta) -> Check {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Certificates from a CA the exporter does not trust.
    let pki = testkit::pki::TestPki::new();
    let (collector, paired) = runtime.block_on(async {
        (
            testkit::smtp::FakeSmtp::start(testkit::smtp::Behaviour::default(), &pki).await,
            testkit::smtp::FakeSmtp::start(testkit::smtp::Behaviour::default(), &pki).await,
        )
    });
    let auth =
        format!("{{ username: {}, password_file: {} }}", mta.get("AUTH_USER"), mta.get("AUTH_PASSWORD_FILE"));
    let yaml = format!(
        "interval: 1h\nmodules:\n  submission: {{ tls: starttls_required, tls_config: {{ ca_file: {ca} }}, auth: {auth} }}\n  \
         opportunistic: {{ tls: starttls, auth: {auth} }}\n  plain: {{ tls: none }}\ntargets:\n  \
         - {{ name: postfix, host: localhost, ports: [{{ port: {sub}, module: submission }}] }}\n  \
         - {{ name: paired, host: 127.0.0.1, ports: [{{ port: {paired}, module: opportunistic }}] }}\n",
        ca = mta.get("CA_FILE"),
        sub = mta.get("SUBMISSION_PORT"),
        paired = paired.port(),
    );
    let path = mta.state_dir.join("attack-credentials.yml");
    std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    exporter.wait_ready(&path, Duration::from_secs(10))?;
    let probe = |target: &str, module: &str| {
        http_get(exporter.addr, &format!("/probe?target={target}&module={module}"))
    };

    let (status, body) = probe(&format!("localhost:{}", mta.get("SUBMISSION_PORT")), "submission")?;
    let samples = parse_exposition(&body);
    if status != 200 || one(&samples, "smtp_probe_success", &[])?.value != 1.0 {
        return Err(format!("the configured pair on Postfix: {status}\n{body}"));
    }
    for host in ["127.0.0.1", "localhost"] {
        let (status, body) = probe(&format!("{host}:{}", collector.port()), "submission")?;
        if status != 403 || !body.contains("the module carries credentials") {
            return Err(format!("{host}:collector with the credentialed module: {status} {body}"));
        }
    }
    let (status, body) = probe(&format!("127.0.0.1:{}", paired.port()), "opportunistic")?;
    let samples = parse_exposition(&body);
    if status != 200
        || find(&samples, "smtp_probe_failure_info", &[("reason", "auth_tls_unverified")]).len() != 1
    {
        return Err(format!("the paired server with an untrusted certificate: {status}\n{body}"));
    }
    // The one plain module may still go to the collector: the 403s were about credentials.
    let (status, _) = probe(&format!("127.0.0.1:{}", collector.port()), "plain")?;
    std::thread::sleep(Duration::from_millis(300));
    let (to_collector, to_paired) = (collector.observed(), paired.observed());
    let auth_lines = |seen: &[testkit::smtp::Observed]| {
        seen.iter().flat_map(|o| o.lines.iter()).filter(|l| l.starts_with("AUTH")).count()
    };
    println!(
        "    Postfix authenticated the configured pair; collector: 2 refused with 403, {} connection(s) by the plain module; \
         paired server with an untrusted certificate: {} session(s), {} AUTH line(s)",
        to_collector.len(),
        to_paired.len(),
        auth_lines(&to_paired)
    );
    if status != 200 || to_collector.len() != 1 || auth_lines(&to_collector) != 0 {
        return Err(format!("the collector saw {} sessions: {to_collector:?}", to_collector.len()));
    }
    if to_paired.is_empty() || auth_lines(&to_paired) != 0 {
        return Err(format!("the paired server saw: {to_paired:?}"));
    }
    Ok(())
}

/// Finding 6: without `--web.enable-lifecycle`, `POST /-/reload` is refused and SIGHUP
/// still reloads; with it, a cross-origin form post is refused and a same-origin one works.
pub fn reload_endpoint_closed_by_default(mta: &Mta) -> Check {
    let targets = format!(
        "  - name: postfix\n    host: localhost\n    ports:\n      - {{ port: {}, module: relay }}\n",
        mta.get("RELAY_PORT")
    );
    let path = write_config(mta, "attack-lifecycle.yml", &targets);
    let reload_time = |exporter: &Exporter| -> Result<f64, String> {
        Ok(one(
            &parse_exposition(&exporter.exposition()?),
            "smtp_exporter_config_last_reload_success_timestamp_seconds",
            &[],
        )?
        .value)
    };
    let closed = Exporter::spawn(&path, &[], None)?;
    closed.wait_ready(&path, Duration::from_secs(10))?;
    let (status, body, _) = post_reload(closed.addr)?;
    if status != 403 || !body.contains("--web.enable-lifecycle") {
        return Err(format!("POST /-/reload without the flag: {status} {body}"));
    }
    let before = reload_time(&closed)?;
    std::thread::sleep(Duration::from_millis(1100));
    run("kill", &["-HUP", &closed.child.id().to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while reload_time(&closed)? <= before {
        if Instant::now() > deadline {
            return Err("SIGHUP did not reload within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(closed);

    let open = Exporter::spawn(&path, &["--web.enable-lifecycle".into()], None)?;
    open.wait_ready(&path, Duration::from_secs(10))?;
    let mut client = testkit::http::Client::new(open.addr, Duration::from_secs(10));
    let forged = client.request(
        "POST",
        "/-/reload",
        &[("Origin", "http://evil.example"), ("Content-Type", "text/plain")],
        b"x=1",
    )?;
    let same = client.request("POST", "/-/reload", &[("Origin", &format!("http://{}", open.addr))], b"")?;
    println!(
        "    without the flag: 403, SIGHUP reloads; with it: cross-origin {}, same-origin {}",
        forged.status, same.status
    );
    if forged.status != 403 || same.status != 200 {
        return Err(format!("with the flag: cross-origin {}, same-origin {}", forged.status, same.status));
    }
    Ok(())
}
