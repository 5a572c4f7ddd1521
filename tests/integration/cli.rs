//! The `smtp_exporter` binary as a user starts it: exit codes, what it prints, its logs.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::exposition::{find, parse_exposition, value};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_smtp_exporter");

/// A file in a directory of this test's own.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smtp-exporter-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the binary to completion (bounded) and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    run_with_env(args, &[])
}

/// `run`, with these environment variables set for the binary.
fn run_with_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), out, err)
}

/// The exporter running as a child process, killed when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn start(config: &str, extra: &[&str]) -> Running {
        let path = temp_file(&format!("config-{}.yml", free_port()), config);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args =
            vec![format!("--config.file={}", path.display()), format!("--web.listen-address={addr}")];
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the exporter");
        Running { child, addr }
    }

    /// Reads log lines until `done` says so, for at most `within`.
    fn log_lines_until(&mut self, within: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
        let stderr = self.child.stderr.take().expect("stderr is read once");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + within;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let finished = done(&line);
                    lines.push(line);
                    if finished {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        lines
    }

    fn get(&self, path: &str) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match testkit::http::get(self.addr, path) {
                Ok(answer) => return answer,
                Err(e) => assert!(Instant::now() < deadline, "{path} on {}: {e}", self.addr),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON object that refuses a key given twice (serde_json itself keeps the last one).
struct StrictObject(std::collections::BTreeMap<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object without repeated keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out = std::collections::BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if out.insert(key.clone(), value).is_some() {
                        return Err(serde::de::Error::custom(format!("key {key:?} appears twice")));
                    }
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Issue 10 item 5: every JSON log line is one object with each key once; a probe's
/// `target` is the configured target, not tracing's module path.
#[test]
fn json_log_lines_are_strict_json_and_carry_the_probe_target() {
    let config = format!(
        "modules:\n  m: {{ tls: none }}\ntargets:\n  - {{ name: the-target, host: 127.0.0.1, ports: [{{ port: {}, module: m }}] }}\n",
        free_port()
    );
    let mut exporter = Running::start(&config, &["--log.format=json", "--log.level=debug"]);
    let lines = exporter.log_lines_until(Duration::from_secs(10), |l| l.contains("probe failed"));
    assert!(lines.iter().any(|l| l.contains("probe failed")), "no probe failure logged: {lines:?}");
    for line in &lines {
        let StrictObject(object) =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not strict JSON ({e}): {line}"));
        for key in ["ts", "level", "msg"] {
            assert!(object.contains_key(key), "{key} missing: {line}");
        }
        if object["msg"] == "probe failed" {
            assert_eq!(object["target"], "the-target", "{line}");
            assert_eq!(object["port"].as_u64().map(|p| p > 0), Some(true), "{line}");
            assert_eq!(object["reason"], "refused", "{line}");
        }
    }
}

/// Issue 10 item 9: a configuration that cannot load fails the start before anything
/// listens; `--config.check` rejects an empty file and a listen address with no valid port,
/// and accepts the shipped example as it is.
#[test]
fn bad_starts_fail_before_listening_with_a_clear_error() {
    let (code, _out, err) =
        run(&["--config.file=/nonexistent/smtp_exporter.yml", "--web.listen-address=127.0.0.1:0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/smtp_exporter.yml: No such file or directory"), "{err}");
    assert!(!err.contains("listening"), "logged 'listening' before failing: {err}");

    let empty = temp_file("empty.yml", "# nothing here yet\n");
    let (code, _out, err) = run(&["--config.check", &format!("--config.file={}", empty.display())]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing to probe"), "{err}");

    let (code, _out, err) = run(&["--config.check", "--web.listen-address=:99999"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--web.listen-address") && err.contains("99999"), "{err}");

    let (code, _out, err) = run(&["--config.check", "--web.telemetry-path=/probe"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--web.telemetry-path \"/probe\": /probe is another page of the exporter"), "{err}");
    let (code, _out, err) = run(&["--config.check", "--web.external-url=proxy.example/smtp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--web.external-url \"proxy.example/smtp\": must be an absolute"), "{err}");

    // An address that cannot be bound (not one of this machine's) is named as it was
    // given, an IPv6 address in brackets.
    let example_file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yml");
    for address in ["192.0.2.1:9", "[2001:db8::1]:9"] {
        let (code, _out, err) =
            run(&[&format!("--config.file={example_file}"), &format!("--web.listen-address={address}")]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("cannot listen") && err.contains(&format!("address={address} ")), "{err}");
    }

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yml");
    let (code, out, err) = run(&["--config.check", &format!("--config.file={example}")]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.starts_with("configuration is valid:"), "{out}");
}

/// `--config.check` prints what loads but will probably not work, and still succeeds.
#[test]
fn config_check_prints_warnings() {
    let path = temp_file(
        "short-banner.yml",
        "modules:\n  relay: { tls: starttls, phase_timeout: 3s }\ntargets:\n  - { host: mx.example.test, ports: [{ port: 25, module: relay }] }\n",
    );
    let (code, out, err) = run(&["--config.check", &format!("--config.file={}", path.display())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(err.starts_with("warning: modules.relay: a banner deadline of 3s"), "{err}");
}

/// Issue 17: the running exporter logs the same warnings when it loads the configuration.
#[test]
fn the_exporter_logs_configuration_warnings_at_start() {
    let mut exporter = Running::start(
        "modules:\n  relay: { tls: starttls, phase_timeout: 3s }\ntargets:\n  - { host: 127.0.0.1, ports: [{ port: 25, module: relay }] }\n",
        &[],
    );
    let lines = exporter.log_lines_until(Duration::from_secs(10), |l| l.contains("configuration warning"));
    let warning = lines.iter().find(|l| l.contains("configuration warning"));
    assert!(
        warning.is_some_and(|l| l.contains("level=warn") && l.contains("a banner deadline of 3s")),
        "{lines:#?}"
    );
}

/// The exposition of the running exporter, parsed.
fn scrape(exporter: &Running) -> Vec<testkit::exposition::Sample> {
    let (status, body) = exporter.get("/metrics");
    assert_eq!(status, 200, "{body}");
    parse_exposition(&body)
}

/// User plus system CPU of a process, from /proc, in seconds (10 ms ticks).
fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// Issue 10 item 10: `process_cpu_seconds_total` is in fractional seconds, like every Go
/// exporter's, not the whole seconds of the `prometheus` crate: after a burst of probes it
/// agrees with the kernel's own count to within a few ticks.
#[test]
fn process_cpu_seconds_are_fractional() {
    let config = format!(
        "modules:\n  m: {{ tls: none }}\ntargets:\n  - {{ host: 127.0.0.1, ports: [{{ port: {}, module: m }}] }}\n",
        free_port()
    );
    let exporter = Running::start(&config, &[]);
    let refused = free_port();
    let started = Instant::now();
    // A burst of on-demand probes (refused at once), until the process has used a visible
    // fraction of a second, bounded in count and time.
    for i in 0..5_000 {
        let (status, _) = exporter.get(&format!("/probe?target=127.0.0.1:{refused}&module=m"));
        assert_eq!(status, 200);
        if i % 100 == 99 && proc_cpu_seconds(exporter.child.id()) >= 0.2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the burst took too long");
    }
    let metric = value(&scrape(&exporter), "process_cpu_seconds_total", &[]);
    let kernel = proc_cpu_seconds(exporter.child.id());
    assert!(metric > 0.0 && metric.fract() != 0.0, "process_cpu_seconds_total {metric}, kernel {kernel}");
    assert!((metric - kernel).abs() < 0.05, "process_cpu_seconds_total {metric}, kernel {kernel}");
}

/// A loopback port that accepts connections (the kernel's backlog) and never says a word.
fn silent_port() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn slow_fleet(max_concurrency: usize, port: u16) -> String {
    let mut config = format!(
        "interval: 2s\nmax_concurrency: {max_concurrency}\nmodules:\n  m: {{ tls: none, timeout: 1500ms }}\ntargets:\n"
    );
    for i in 0..4 {
        config.push_str(&format!(
            "  - {{ name: silent{i}, host: 127.0.0.1, ports: [{{ port: {port}, module: m }}] }}\n"
        ));
    }
    config
}

/// Issue 10 item 12: when probes cannot keep up with their interval (four probes of
/// 1.5 s every 2 s, one at a time), the exporter counts the late starts and says so in its
/// log once, not once per probe.
#[test]
fn probes_that_cannot_keep_up_are_counted_and_logged_once() {
    let (_listener, port) = silent_port();
    let mut exporter = Running::start(&slow_fleet(1, port), &[]);
    let lines = exporter.log_lines_until(Duration::from_secs(7), |_| false);
    let warned = lines.iter().filter(|l| l.contains("probes cannot keep up with their schedule")).count();
    assert_eq!(warned, 1, "{lines:#?}");
    let samples = scrape(&exporter);
    assert!(value(&samples, "smtp_exporter_probes_late_total", &[]) >= 2.0);
    assert_eq!(value(&samples, "smtp_exporter_max_concurrency", &[]), 1.0);
    assert!(value(&samples, "smtp_exporter_probe_start_delay_seconds_count", &[]) >= 4.0);
}

/// The control: the same fleet with room for every probe is never late.
#[test]
fn probes_with_room_are_not_late() {
    let (_listener, port) = silent_port();
    let mut exporter = Running::start(&slow_fleet(4, port), &[]);
    let lines = exporter.log_lines_until(Duration::from_secs(4), |_| false);
    assert!(!lines.iter().any(|l| l.contains("cannot keep up")), "{lines:#?}");
    let samples = scrape(&exporter);
    assert_eq!(value(&samples, "smtp_exporter_probes_late_total", &[]), 0.0);
    assert_eq!(value(&samples, "smtp_exporter_probe_slots_skipped_total", &[]), 0.0);
    assert!(value(&samples, "smtp_exporter_probe_start_delay_seconds_count", &[]) >= 4.0);
}

/// Issue 12 finding 1: when the exporter itself runs out of file descriptors, the probes
/// that fail so are not recorded as the targets' fault (no "unreachable" port, which would
/// page as SmtpPortBlocked), they are counted, and the log says so once.
#[test]
fn running_out_of_file_descriptors_is_not_the_targets_fault() {
    let (_listener, port) = silent_port();
    let mut config = String::from(
        "interval: 5s\nmax_concurrency: 200\nmodules:\n  m: { tls: none, timeout: 2s }\ntargets:\n",
    );
    for i in 0..60 {
        config.push_str(&format!(
            "  - {{ name: s{i}, host: 127.0.0.1, ports: [{{ port: {port}, module: m }}] }}\n"
        ));
    }
    let path = temp_file("fd-starved.yml", &config);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // 40 descriptors for the whole process: the runtime, the listener and standard streams
    // take a dozen, so the 60 probes starting at once cannot all have a socket.
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 40 && exec {BIN} --config.file={} --web.listen-address={addr}",
            path.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the exporter with few file descriptors");
    let mut exporter = Running { child, addr };
    let lines = exporter.log_lines_until(Duration::from_secs(4), |_| false);
    let said = lines.iter().filter(|l| l.contains("the exporter is out of resources")).count();
    assert_eq!(said, 1, "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("reason=local_resources") && l.contains("probe failed")),
        "{lines:#?}"
    );
    // Signals are registered before the first probes take every descriptor: a failed
    // registration used to end the exporter as if SIGTERM had come (now and then).
    assert!(!lines.iter().any(|l| l.contains("shutting down")), "{lines:#?}");
    assert!(
        matches!(exporter.child.try_wait(), Ok(None)),
        "the exporter ended: {:?}",
        exporter.child.try_wait()
    );
    eprintln!("DIAG lines: {lines:#?}");
    // Scraping needs a descriptor too: wait until the first probes' sockets are closed.
    let samples = scrape(&exporter);
    assert!(value(&samples, "smtp_exporter_probes_failed_locally_total", &[]) >= 1.0);
    for state in ["unreachable", "no_route", "refused"] {
        let blamed = testkit::exposition::find(&samples, "smtp_port_state", &[("state", state)])
            .iter()
            .filter(|s| s.value == 1.0)
            .count();
        assert_eq!(blamed, 0, "{blamed} targets blamed with state {state}");
    }
}

/// An exporter whose standard error is closed keeps probing and serving: tracing-subscriber
/// reported a failed log write with `eprintln!`, which panics when standard error is gone,
/// so each task that logged died (the HTTP server with the first "accept failed", a
/// spec's task with its first "probe failed").
#[test]
fn a_closed_standard_error_stops_nothing() {
    let config = format!(
        "interval: 1s\nmodules:\n  m: {{ tls: none, timeout: 500ms }}\ntargets:\n  - {{ name: refused, host: 127.0.0.1, ports: [{{ port: {}, module: m }}] }}\n",
        free_port()
    );
    // At debug level every probe logs a line.
    let mut exporter = Running::start(&config, &["--log.level=debug"]);
    let lines = exporter.log_lines_until(Duration::from_secs(5), |l| l.contains("probe failed"));
    assert!(lines.iter().any(|l| l.contains("probe failed")), "{lines:#?}");
    // log_lines_until's reader ends at the next line, closing the pipe: the exporter
    // writes to a closed pipe from then on.
    // The log line comes just before the store records the probe: wait for the series.
    let counted = |exporter: &Running| {
        let waited = std::time::Instant::now();
        loop {
            let samples = scrape(exporter);
            if let [one] = find(&samples, "smtp_probes_total", &[("target", "refused")]).as_slice() {
                return one.value;
            }
            assert!(waited.elapsed() < Duration::from_secs(3), "no smtp_probes_total for the refused target");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let before = counted(&exporter);
    std::thread::sleep(Duration::from_millis(4500));
    assert!(matches!(exporter.child.try_wait(), Ok(None)), "the exporter ended");
    let after = counted(&exporter);
    assert!(after >= before + 3.0, "probes stopped after standard error closed: {before} then {after}");
}

/// `check` exits 1 when no port works, 0 when one does, and 2 on a usage error.
#[test]
fn check_exit_status_says_whether_anything_works() {
    let refused = free_port();
    let (code, out, err) =
        run(&["check", "127.0.0.1", "--port", &format!("{refused}:starttls"), "--timeout", "2s"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("refused") && out.contains("Nothing works on the ports checked."), "{out}");
    let (code, _out, err) = run(&["check", "127.0.0.1", "--port", "0"]);
    assert_eq!(code, 2, "{err}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"220 tiny.example.test ESMTP\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let reply: &[u8] =
                if line.starts_with("EHLO") { b"250 tiny.example.test\r\n" } else { b"221 bye\r\n" };
            stream.write_all(reply).unwrap();
            if line.starts_with("QUIT") {
                break;
            }
            line.clear();
        }
    });
    let (code, out, err) = run(&["check", "127.0.0.1", "--port", &format!("{port}:none"), "--timeout", "2s"]);
    assert_eq!(code, 0, "{out}{err}");
    server.join().unwrap();
}

/// Issue 16: `--version` names the release, the git revision and the build date, as
/// `smtp_exporter_build_info` does.
#[test]
fn version_names_the_revision_and_the_build_date() {
    let (code, out, err) = run(&["--version"]);
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    let want = format!("smtp_exporter {} (revision ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&want), "{line}");
    let revision = line[want.len()..].split(',').next().unwrap();
    assert!(
        revision == "unknown" || (revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
    let date = line.split(", built ").nth(1).unwrap_or("").get(..10).unwrap_or("");
    let digits: Vec<&str> = date.split('-').collect();
    assert!(digits.len() == 3 && digits[0].len() == 4 && date.len() == 10, "{line}");
    assert!(date.as_bytes().iter().all(|b| b.is_ascii_digit() || *b == b'-'), "{line}");
}

/// Issue 17: `system_roots: true` reads the machine's store (here the file SSL_CERT_FILE
/// names, as OpenSSL does), and a store without one usable certificate is an error that
/// says so, not a module that trusts nothing.
#[test]
fn system_roots_come_from_the_machines_store() {
    let config = temp_file(
        "system-roots.yml",
        "modules:\n  m: { tls: starttls, tls_config: { system_roots: true } }\ntargets:\n  - { name: t, host: 127.0.0.1, ports: [{ port: 25, module: m }] }\n",
    );
    let ca = rcgen::generate_simple_self_signed(vec!["ca.example.test".to_owned()]).unwrap();
    let store = temp_file("store.pem", &ca.cert.pem());
    let empty = temp_file("empty-store.pem", "");
    // SSL_CERT_DIR adds to SSL_CERT_FILE: an empty directory, whatever this machine sets.
    let no_dir = empty.parent().unwrap().join("no-certs");
    std::fs::create_dir_all(&no_dir).unwrap();
    let args = ["--config.check", &format!("--config.file={}", config.display())];
    let (code, _out, err) = run_with_env(&args, &[("SSL_CERT_FILE", &store), ("SSL_CERT_DIR", &no_dir)]);
    assert_eq!(code, 0, "{err}");
    let (code, _out, err) = run_with_env(&args, &[("SSL_CERT_FILE", &empty), ("SSL_CERT_DIR", &no_dir)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tls_config.system_roots: no usable certificate in the system store"), "{err}");
}
