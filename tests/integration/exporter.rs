//! The exporter in-process, end to end: config → scheduler → probe → metrics → HTTP.

use std::path::Path;
use std::time::Duration;

use smtp_exporter::app::{self, ConfigSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use testkit::exposition::{find, parse_exposition, value, Sample};
use testkit::pki::TestPki;
use testkit::smtp::{Behaviour, FakeSmtp};

/// One request through testkit's HTTP client, off the runtime's thread so that the
/// exporter in this runtime keeps serving; returns (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, &[]).await
}

/// Like [`http`], with extra request headers.
async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&'static str, &'static str)],
) -> (u16, String) {
    let (method, path, headers) = (method.to_owned(), path.to_owned(), headers.to_vec());
    tokio::task::spawn_blocking(move || {
        let response = testkit::http::Client::new(addr, Duration::from_secs(10))
            .request(&method, &path, &headers, b"")
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (response.status, response.text().to_owned())
    })
    .await
    .unwrap()
}

/// The exporter run in-process on a loopback port until stopped (also used by
/// `hardening`).
pub(crate) struct Running {
    pub(crate) addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts the exporter with the lifecycle API on (the tests reload through it).
    async fn start(config_file: &Path) -> Running {
        Running::start_with(config_file, app::Options { enable_lifecycle: true, ..app::Options::default() })
            .await
    }

    pub(crate) async fn start_with(config_file: &Path, options: app::Options) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let source = ConfigSource::File(config_file.to_owned());
        let task = tokio::spawn(async move {
            app::run(listener, source, options, async {
                let _ = stopped.await;
            })
            .await
            .expect("exporter runs");
        });
        Running { addr, stop: Some(stop), task }
    }

    async fn wait_ready(&self) {
        for _ in 0..500 {
            if http(self.addr, "GET", "/-/ready").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("exporter not ready within 5 s");
    }

    async fn metrics(&self) -> Vec<Sample> {
        let (status, body) = http(self.addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        parse_exposition(&body)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("clean shutdown").unwrap();
    }

    /// One request with `headers` (a `Host` among them replaces the client's own).
    pub(crate) async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let (addr, method, path) = (self.addr, method.to_owned(), path.to_owned());
        let headers: Vec<(String, String)> =
            headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let response = testkit::http::Client::new(addr, Duration::from_secs(10))
                .request(&method, &path, &headers, b"")
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            (response.status, response.text().to_owned())
        })
        .await
        .unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write_config(
    pki: &TestPki,
    name: &str,
    good_port: u16,
    refused_port: u16,
    password_file: &Path,
    with_refused: bool,
) -> std::path::PathBuf {
    let mut yaml = format!(
        "interval: 1m\nmodules:\n  submission:\n    tls: starttls_required\n    timeout: 5s\n    tls_config: {{ ca_file: {ca} }}\n    auth: {{ username: probe@example.test, password_file: {pw} }}\n  relay:\n    tls: starttls\n    timeout: 5s\ntargets:\n  - name: good\n    host: 127.0.0.1\n    ports: [{{ port: {good_port}, module: submission }}]\n    expect: {{ starttls: true, banner_hostname: mx.example.test }}\n",
        ca = pki.ca_file.display(),
        pw = password_file.display(),
    );
    if with_refused {
        yaml.push_str(&format!(
            "  - name: down\n    host: 127.0.0.1\n    ports: [{{ port: {refused_port}, module: relay }}]\n"
        ));
    }
    let path = pki.ca_file.with_file_name(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The usual set-up: a fake server with STARTTLS and AUTH ("good"), a closed port ("down"),
/// the exporter running on a config of both and ready.
struct Fixture {
    pki: TestPki,
    server: FakeSmtp,
    password_file: std::path::PathBuf,
    refused_port: u16,
    config: std::path::PathBuf,
    exporter: Running,
}

impl Fixture {
    async fn start() -> Fixture {
        let pki = TestPki::new();
        let server = FakeSmtp::start(Behaviour::default(), &pki).await;
        let password_file = pki.ca_file.with_file_name("password");
        std::fs::write(&password_file, "correct horse\n").unwrap();
        let refused_port = free_port();
        let config = write_config(&pki, "config.yml", server.port(), refused_port, &password_file, true);
        let exporter = Running::start(&config).await;
        exporter.wait_ready().await;
        Fixture { pki, server, password_file, refused_port, config, exporter }
    }
}

#[tokio::test]
async fn scrape_shows_every_core_series() {
    let Fixture { server, exporter, .. } = Fixture::start().await;
    let m = exporter.metrics().await;

    let good = [("target", "good"), ("module", "submission")];
    let good_port = server.port().to_string();
    let good: Vec<(&str, &str)> = good.into_iter().chain([("port", good_port.as_str())]).collect();
    let down = [("target", "down"), ("module", "relay")];

    assert_eq!(value(&m, "smtp_probe_success", &good), 1.0);
    assert_eq!(value(&m, "smtp_probe_success", &down), 0.0);
    for phase in
        ["resolve", "connect", "banner", "ehlo", "starttls", "tls_handshake", "ehlo_tls", "auth", "quit"]
    {
        let labels: Vec<(&str, &str)> = good.iter().copied().chain([("phase", phase)]).collect();
        assert!(value(&m, "smtp_probe_phase_duration_seconds", &labels) > 0.0, "phase {phase}");
    }
    assert_eq!(find(&m, "smtp_probe_phase_duration_seconds", &good).len(), 9);
    assert!(value(&m, "smtp_probe_duration_seconds", &good) > 0.0);
    assert_eq!(value(&m, "smtp_probe_banner_code", &good), 220.0);
    assert_eq!(value(&m, "smtp_tls_version_info", &[good[0], ("version", "TLS1.3")]), 1.0);
    // rcgen's default notAfter is the year 4096.
    assert!(value(&m, "smtp_tls_cert_expiry_timestamp_seconds", &good) > 4.0e10);
    assert_eq!(value(&m, "smtp_probes_total", &good), 1.0);
    assert!(find(&m, "smtp_probe_failure_info", &good).is_empty());
    assert!(find(&m, "smtp_probe_failures_total", &good).is_empty());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let last_run = value(&m, "smtp_probe_last_run_timestamp_seconds", &good);
    assert!((now - 60.0..=now).contains(&last_run), "last run {last_run}, now {now}");

    assert_eq!(
        value(&m, "smtp_probe_failure_info", &[down[0], ("phase", "connect"), ("reason", "refused")]),
        1.0
    );
    assert_eq!(value(&m, "smtp_probe_failures_total", &[down[0], ("reason", "refused")]), 1.0);
    assert!(find(&m, "smtp_probe_banner_code", &down).is_empty());

    // Port state: every state exported, 1 on the current one.
    assert_eq!(find(&m, "smtp_port_state", &good).len(), 8);
    assert_eq!(value(&m, "smtp_port_state", &[good[0], ("state", "open")]), 1.0);
    assert_eq!(value(&m, "smtp_port_state", &[good[0], ("state", "refused")]), 0.0);
    assert_eq!(value(&m, "smtp_port_state", &[down[0], ("state", "refused")]), 1.0);
    assert_eq!(find(&m, "smtp_port_state", &down).iter().map(|s| s.value).sum::<f64>(), 1.0);
    assert_eq!(value(&m, "smtp_starttls_advertised", &good), 1.0);
    assert_eq!(value(&m, "smtp_probe_banner_info", &[good[0], ("hostname", "fake.example.test")]), 1.0);
    assert_eq!(value(&m, "smtp_probe_expectation_failed", &[good[0], ("check", "starttls")]), 0.0);
    assert_eq!(value(&m, "smtp_probe_expectation_failed", &[good[0], ("check", "banner_hostname")]), 1.0);
    assert_eq!(find(&m, "smtp_probe_phase_duration_seconds", &down).len(), 2, "resolve and connect only");

    // TLS, AUTH and EHLO in depth.
    assert_eq!(value(&m, "smtp_tls_cert_verified", &good), 1.0);
    assert!(find(&m, "smtp_tls_cert_error_info", &good).is_empty());
    assert_eq!(find(&m, "smtp_tls_cipher_info", &good).len(), 1);
    assert_eq!(find(&m, "smtp_tls_kx_group_info", &good).len(), 1);
    let info = find(
        &m,
        "smtp_tls_cert_info",
        &[good[0], ("subject_cn", "localhost"), ("issuer_cn", "smtp_exporter test CA")],
    );
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].labels["fingerprint_sha256"].len(), 64);
    assert!(value(&m, "smtp_tls_chain_earliest_expiry_timestamp_seconds", &good) > 4.0e10);
    assert_eq!(value(&m, "smtp_auth_success", &good), 1.0);
    assert_eq!(value(&m, "smtp_auth_reply_code", &good), 235.0);
    assert!(find(&m, "smtp_auth_success", &down).is_empty());
    // ehlo_metrics: offered (the default): what is advertised, at 1; nothing else.
    let ext = |e: &'static str, session: &'static str| {
        find(&m, "smtp_ehlo_extension", &[good[0], ("extension", e), ("session", session)])
            .first()
            .map(|s| s.value)
    };
    assert_eq!(ext("STARTTLS", "plain"), Some(1.0));
    assert_eq!(ext("STARTTLS", "tls"), None);
    assert_eq!(ext("PIPELINING", "tls"), Some(1.0));
    assert_eq!(ext("CHUNKING", "tls"), None);
    let mech = |mech: &'static str, session: &'static str| {
        find(&m, "smtp_ehlo_auth_mechanism", &[good[0], ("mechanism", mech), ("session", session)])
            .first()
            .map(|s| s.value)
    };
    assert_eq!(mech("PLAIN", "tls"), Some(1.0));
    assert_eq!(mech("PLAIN", "plain"), None, "the fake offers AUTH only after TLS");
    assert_eq!(mech("CRAM-MD5", "tls"), None);
    assert_eq!(value(&m, "smtp_ehlo_size_limit_bytes", &[good[0], ("session", "tls")]), 10_240_000.0);
    assert_eq!(value(&m, "smtp_probe_bare_lf_lines", &good), 0.0);

    assert_eq!(value(&m, "smtp_exporter_web_config_last_reload_successful", &[]), 1.0);
    assert_eq!(value(&m, "smtp_exporter_config_last_reload_successful", &[]), 1.0);
    assert_eq!(find(&m, "smtp_exporter_build_info", &[("version", env!("CARGO_PKG_VERSION"))]).len(), 1);
    assert!(value(&m, "process_resident_memory_bytes", &[]) > 0.0);

    let (_, body) = http(exporter.addr, "GET", "/metrics").await;
    assert!(!body.contains("correct horse"), "password in /metrics");
    assert!(body.contains("# HELP smtp_probe_success 1 if every phase of the module succeeded, else 0 (from the last scheduled probe)."));
    exporter.stop().await;
}

/// Issue 17: every page takes only the methods it is for. The read-only pages answer
/// anything but GET and HEAD with 405 and `Allow: GET, HEAD`; reload takes POST or PUT and
/// says so to a GET. (A POST must never start an on-demand probe or show the config.)
#[tokio::test]
async fn every_page_refuses_the_methods_it_does_not_take() {
    let Fixture { exporter, .. } = Fixture::start().await;
    let addr = exporter.addr;
    let ask = move |method: &'static str, path: &'static str| {
        tokio::task::spawn_blocking(move || {
            testkit::http::Client::new(addr, Duration::from_secs(10))
                .request(method, path, &[], b"")
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        })
    };
    let pages = [
        "/metrics",
        "/probe?target=127.0.0.1:9&module=submission",
        "/",
        "/config",
        "/transcript",
        "/history",
        "/-/healthy",
        "/-/ready",
    ];
    for path in pages {
        for method in ["POST", "PUT", "DELETE"] {
            let response = ask(method, path).await.unwrap();
            assert_eq!(
                (response.status, response.header("allow")),
                (405, Some("GET, HEAD")),
                "{method} {path}"
            );
        }
        assert_ne!(ask("GET", path).await.unwrap().status, 405, "GET {path}");
    }
    let response = ask("GET", "/-/reload").await.unwrap();
    assert_eq!((response.status, response.header("allow")), (405, Some("POST, PUT")));
    exporter.stop().await;
}

#[tokio::test]
async fn endpoints_answer_with_the_right_status() {
    let Fixture { exporter, .. } = Fixture::start().await;
    let (status, body) = http(exporter.addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("href=\"/metrics\""));
    assert_eq!(http(exporter.addr, "GET", "/-/healthy").await.0, 200);
    assert_eq!(http(exporter.addr, "GET", "/nope").await.0, 404);
    assert_eq!(http(exporter.addr, "POST", "/metrics").await.0, 405);
    assert_eq!(http(exporter.addr, "GET", "/-/reload").await.0, 405);

    // A malformed request gets a 400, not a hang.
    let mut stream = TcpStream::connect(exporter.addr).await.unwrap();
    stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    exporter.stop().await;
}

#[tokio::test]
async fn reload_applies_good_configs_and_keeps_the_old_one_on_errors() {
    let Fixture { pki, server, password_file, refused_port, config, exporter } = Fixture::start().await;
    assert_eq!(find(&exporter.metrics().await, "smtp_probe_success", &[("target", "down")]).len(), 1);

    // A bad config: the reload fails, the old specs keep running.
    std::fs::write(&config, "modules: [oops\n").unwrap();
    let (status, body) = http(exporter.addr, "POST", "/-/reload").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("config.yml"), "the error names the file: {body}");
    let m = exporter.metrics().await;
    assert_eq!(value(&m, "smtp_exporter_config_last_reload_successful", &[]), 0.0);
    assert_eq!(find(&m, "smtp_probe_success", &[("target", "down")]).len(), 1);

    // A good config without the "down" target: its series vanish.
    write_config(&pki, "config.yml", server.port(), refused_port, &password_file, false);
    assert_eq!(http(exporter.addr, "POST", "/-/reload").await.0, 200);
    let m = exporter.metrics().await;
    assert_eq!(value(&m, "smtp_exporter_config_last_reload_successful", &[]), 1.0);
    assert!(find(&m, "smtp_probe_success", &[("target", "down")]).is_empty());
    assert_eq!(find(&m, "smtp_probe_success", &[("target", "good")]).len(), 1);

    // Adding "down" back: it is probed at once (its interval is a minute, so only the
    // immediate first probe can make it show up this soon).
    write_config(&pki, "config.yml", server.port(), refused_port, &password_file, true);
    assert_eq!(http(exporter.addr, "POST", "/-/reload").await.0, 200);
    let mut appeared = false;
    for _ in 0..200 {
        let m = exporter.metrics().await;
        if !find(&m, "smtp_probe_success", &[("target", "down")]).is_empty() {
            appeared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(appeared, "a spec added by a reload was not probed at once");
    exporter.stop().await;
}

#[tokio::test]
async fn probe_endpoint_runs_one_probe_and_answers_with_its_series_only() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let slow =
        FakeSmtp::start(Behaviour { greeting_delay: Duration::from_secs(5), ..Behaviour::default() }, &pki)
            .await;
    let password_file = pki.ca_file.with_file_name("password");
    std::fs::write(&password_file, "correct horse").unwrap();
    let config = write_config(&pki, "config.yml", server.port(), 0, &password_file, false);
    let exporter = Running::start(&config).await;
    exporter.wait_ready().await;

    let path = format!("/probe?target=127.0.0.1:{}&module=submission", server.port());
    let (status, body) = http(exporter.addr, "GET", &path).await;
    assert_eq!(status, 200, "{body}");
    let m = parse_exposition(&body);
    let port = server.port().to_string();
    let labels = [("target", "127.0.0.1"), ("port", port.as_str()), ("module", "submission")];
    assert_eq!(value(&m, "smtp_probe_success", &labels), 1.0);
    assert_eq!(find(&m, "smtp_probe_phase_duration_seconds", &labels).len(), 9);
    assert!(find(&m, "smtp_probes_total", &[]).is_empty(), "no counters for an on-demand probe");
    assert!(find(&m, "smtp_probe_success", &[("target", "good")]).is_empty(), "only this probe's series");
    assert!(body.contains("(from this probe)"));
    assert!(!body.contains("scheduled"));

    // Prometheus' scrape timeout, less a margin, caps the probe: 1.5 s - 0.5 s.
    let started = std::time::Instant::now();
    let path = format!("/probe?target=127.0.0.1:{}&module=relay", slow.port());
    let (status, body) =
        http_with(exporter.addr, "GET", &path, &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")]).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    let m = parse_exposition(&body);
    assert_eq!(value(&m, "smtp_probe_failure_info", &[("phase", "banner"), ("reason", "timeout")]), 1.0);
    // Never before the 1 s cap; how late depends on the machine's load, so the upper bound
    // only tells the cap from the module's own 5 s.
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "took {took:?}");
    // A scrape timeout that is not a positive number is ignored: the module's own 5 s
    // holds, so a greeting 400 ms late still arrives (a zero once became a 100 ms cap, and
    // an infinite or negative one would have panicked the connection).
    let unhurried = FakeSmtp::start(
        Behaviour { greeting_delay: Duration::from_millis(400), ..Behaviour::default() },
        &pki,
    )
    .await;
    let path = format!("/probe?target=127.0.0.1:{}&module=relay", unhurried.port());
    for header in ["0", "-1", "-inf", "inf", "NaN", "soon"] {
        let (status, body) =
            http_with(exporter.addr, "GET", &path, &[("X-Prometheus-Scrape-Timeout-Seconds", header)]).await;
        assert_eq!(status, 200, "{header}: {body}");
        assert_eq!(value(&parse_exposition(&body), "smtp_probe_success", &[]), 1.0, "{header}: {body}");
    }

    for (path, status, needle) in [
        ("/probe?target=127.0.0.1:25&module=nope".to_owned(), 400, "unknown module \"nope\""),
        ("/probe?target=127.0.0.1&module=relay".to_owned(), 400, "the port is missing"),
        ("/probe?module=relay".to_owned(), 400, "target parameter is missing"),
        ("/probe?target=127.0.0.1:25".to_owned(), 400, "module parameter is missing"),
        ("/probe?target=10.1.2.3:25&module=relay".to_owned(), 403, "is not allowed"),
        ("/probe?target=localhost:25&module=relay".to_owned(), 403, "is not allowed"),
    ] {
        let (got, body) = http(exporter.addr, "GET", &path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
        assert_eq!(body.lines().count(), 1, "one-line reason: {body}");
    }

    // Issue 12 finding 5: a module with credentials is only used where the configuration
    // uses it. A listener on another port of an allowed host gets no connection at all,
    // so it cannot collect the password; a module without credentials may still go there.
    let collector = FakeSmtp::start(Behaviour::default(), &pki).await;
    let path = format!("/probe?target=127.0.0.1:{}&module=submission", collector.port());
    let (status, body) = http(exporter.addr, "GET", &path).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("the module carries credentials"), "{body}");
    let path = format!("/probe?target=127.0.0.1:{}&module=relay", collector.port());
    assert_eq!(http(exporter.addr, "GET", &path).await.0, 200);
    let seen = collector.wait_for_connections(1).await;
    assert_eq!(seen.len(), 1, "only the module without credentials connected");
    assert!(seen[0].lines.iter().all(|l| !l.starts_with("AUTH")), "{:?}", seen[0].lines);
    exporter.stop().await;
}

#[tokio::test]
async fn status_page_lists_every_spec_and_escapes_what_it_shows() {
    let pki = TestPki::new();
    // A hostile server: markup in its greeting ends up in the failure detail.
    let hostile =
        Behaviour { greeting: b"554 <script>alert(1)</script>\r\n".to_vec(), ..Behaviour::default() };
    let server = FakeSmtp::start(hostile, &pki).await;
    let refused = free_port();
    let yaml = format!(
        "modules:\n  relay: {{ tls: starttls, timeout: 5s }}\ntargets:\n  - name: \"<b>bold</b>\"\n    host: 127.0.0.1\n    ports: [{{ port: {}, module: relay }}, {{ port: {refused}, module: relay }}]\n",
        server.port()
    );
    let config = pki.ca_file.with_file_name("status.yml");
    std::fs::write(&config, yaml).unwrap();
    let exporter = Running::start(&config).await;
    exporter.wait_ready().await;
    let (status, body) = http(exporter.addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<meta http-equiv=\"refresh\""));
    assert!(body.contains("href=\"/metrics\""));
    assert_eq!(body.matches("<tr class=\"spec\"").count(), 2);
    assert!(body.contains(&format!("data-port=\"{refused}\"")));
    assert!(body.contains("data-state=\"refused\""));
    assert!(body.contains("data-reason=\"reply_5xx\""));
    assert!(body.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(!body.contains("<b>bold"), "configured names are escaped");
    assert!(!body.contains("<script>"), "server text is escaped");
    assert!(body.contains("id=\"count-failing\">2 failing"));
    exporter.stop().await;
}

/// `ehlo_metrics: false` drops the per-extension and per-mechanism gauges of a module's
/// specs (the bulk of a large exposition) and keeps the rest.
#[tokio::test]
async fn ehlo_metrics_can_be_turned_off_per_module() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let yaml = format!(
        "modules:\n  lean: {{ tls: starttls, timeout: 5s, ehlo_metrics: false }}\n  offered: {{ tls: starttls, timeout: 5s }}\n  all: {{ tls: starttls, timeout: 5s, ehlo_metrics: all }}\n  old: {{ tls: starttls, timeout: 5s, ehlo_metrics: true }}\ntargets:\n  - name: fake\n    host: 127.0.0.1\n    ports: [{{ port: {p}, module: lean }}, {{ port: {p}, module: offered }}, {{ port: {p}, module: all }}, {{ port: {p}, module: old }}]\n",
        p = server.port()
    );
    let config = pki.ca_file.with_file_name("lean.yml");
    std::fs::write(&config, yaml).unwrap();
    let exporter = Running::start(&config).await;
    exporter.wait_ready().await;
    let m = exporter.metrics().await;
    let series = |family: &str, module: &str| find(&m, family, &[("module", module)]);
    for family in ["smtp_ehlo_extension", "smtp_ehlo_auth_mechanism"] {
        assert!(series(family, "lean").is_empty());
        // Every known keyword in both sessions, at 1 or 0; `true` is `all`.
        let want = if family == "smtp_ehlo_extension" { 18 } else { 20 };
        assert_eq!(series(family, "all").len(), want, "{family}");
        assert_eq!(series(family, "old").len(), want, "{family}");
        // offered: exactly the ones at 1 under `all`.
        let ones = |module: &str| {
            let mut v: Vec<_> = series(family, module)
                .iter()
                .filter(|s| s.value == 1.0)
                .map(|s| {
                    (
                        s.labels.get("extension").or(s.labels.get("mechanism")).cloned(),
                        s.labels["session"].clone(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert!(series(family, "offered").iter().all(|s| s.value == 1.0));
        assert_eq!(series(family, "offered").len(), ones("all").len(), "{family}");
        assert_eq!(ones("offered"), ones("all"), "{family}");
    }
    assert_eq!(
        value(&m, "smtp_ehlo_size_limit_bytes", &[("module", "lean"), ("session", "plain")]),
        10_240_000.0
    );
    assert_eq!(value(&m, "smtp_starttls_advertised", &[("module", "lean")]), 1.0);
    exporter.stop().await;
}

/// `smtp_probes_total` per target, from one scrape.
fn probes_per_target(samples: &[Sample]) -> std::collections::BTreeMap<String, f64> {
    find(samples, "smtp_probes_total", &[]).iter().map(|s| (s.labels["target"].clone(), s.value)).collect()
}

/// A fleet of `n` plain specs on one fake server port, probed every `interval`; target
/// "t0" uses the module named `first_module`.
fn fleet_config(n: usize, port: u16, interval: &str, first_module: &str) -> String {
    let mut yaml = format!(
        "interval: {interval}\nmodules:\n  plain: {{ tls: none, timeout: 2s }}\n  other: {{ tls: none, timeout: 2s, ehlo_hostname: other.example.test }}\ntargets:\n"
    );
    for i in 0..n {
        let module = if i == 0 { first_module } else { "plain" };
        yaml.push_str(&format!(
            "  - {{ name: t{i}, host: 127.0.0.1, ports: [{{ port: {port}, module: {module} }}] }}\n"
        ));
    }
    yaml
}

/// Issue 11 item 5: a reload that changes one spec of 100 neither repeats nor delays the
/// probes of the other 99: their tasks are kept, on their schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_neither_repeats_nor_delays_the_probes_of_unchanged_specs() {
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour { starttls: false, ..Behaviour::default() }, &pki).await;
    let config = pki.ca_file.with_file_name("fleet.yml");
    std::fs::write(&config, fleet_config(100, server.port(), "4s", "plain")).unwrap();
    let exporter = Running::start(&config).await;
    exporter.wait_ready().await;
    let before = probes_per_target(&exporter.metrics().await);
    assert_eq!(before.len(), 100);

    std::fs::write(&config, fleet_config(100, server.port(), "4s", "other")).unwrap();
    let connections_at_reload = server.observed().len();
    assert_eq!(http(exporter.addr, "POST", "/-/reload").await.0, 200);
    // 100 specs every 4 s start 25 probes a second; re-probing the kept specs at once
    // would be about 100 connections in this window.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let burst = server.observed().len() - connections_at_reload;
    assert!(burst <= 25, "{burst} probes in the 400 ms after the reload: kept specs were probed again");

    // One interval (and a margin) later, every kept spec has been probed on its slot.
    tokio::time::sleep(Duration::from_millis(4_400)).await;
    let after = probes_per_target(&exporter.metrics().await);
    for i in 1..100 {
        let target = format!("t{i}");
        assert!(
            after[&target] >= before[&target] + 1.0,
            "{target}: {} probes before, {} after",
            before[&target],
            after[&target]
        );
        assert!(
            after[&target] <= before[&target] + 2.0,
            "{target}: {} probes before, {} after",
            before[&target],
            after[&target]
        );
    }
    exporter.stop().await;
}

/// A loopback port that accepts connections, holds each for half a second without a word,
/// then closes it itself, counting how many are open at once. The server closes first, so
/// its count drops before the probe can see the close and give its slot to the next one.
async fn silent_counting_port() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let most_seen = most.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (open, most) = (open.clone(), most.clone());
            tokio::spawn(async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                drop(stream);
            });
        }
    });
    (port, most_seen)
}

/// Issue 11 item 5 and issue 12 finding 1: one concurrency limit holds across reloads.
/// Twenty specs to a port that holds each connection half a second without a greeting, two
/// at a time; reloads while the first round is still running must not let more than two
/// probes open connections at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_concurrency_limit_holds_across_reloads() {
    let (port, most) = silent_counting_port().await;
    let dir = std::env::temp_dir().join(format!("smtp-exporter-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("limit.yml");
    let yaml = |comment: usize| {
        let mut yaml = format!("# reload {comment}\ninterval: 10s\nmax_concurrency: 2\nmodules:\n  silent: {{ tls: none, timeout: 1s }}\ntargets:\n");
        for i in 0..20 {
            yaml.push_str(&format!(
                "  - {{ name: s{i}, host: 127.0.0.1, ports: [{{ port: {port}, module: silent }}] }}\n"
            ));
        }
        yaml
    };
    std::fs::write(&config, yaml(0)).unwrap();
    let exporter = Running::start(&config).await;
    for round in 1..=5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&config, yaml(round)).unwrap();
        assert_eq!(http(exporter.addr, "POST", "/-/reload").await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most >= 1, "nothing was probed");
    assert!(most <= 2, "{most} probes open at once with max_concurrency 2");
    let m = exporter.metrics().await;
    assert_eq!(value(&m, "smtp_exporter_max_concurrency", &[]), 2.0);
    exporter.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 12 finding 6: `POST /-/reload` only with --web.enable-lifecycle, and never from a
/// page of another site (a cross-origin `text/plain` form post reloaded it before).
#[tokio::test]
async fn reload_over_http_needs_the_lifecycle_flag_and_the_same_origin() {
    let Fixture { exporter, config, pki: _pki, server: _server, .. } = Fixture::start().await;
    // The testkit client sends `Host: 127.0.0.1:PORT`; a page of the exporter itself says so.
    let own_origin: &'static str = Box::leak(format!("http://{}", exporter.addr).into_boxed_str());
    for (headers, status, needle) in [
        (vec![("Sec-Fetch-Site", "same-origin")], 200, "reloaded"),
        (vec![("Sec-Fetch-Site", "none")], 200, "reloaded"),
        (vec![("Origin", own_origin)], 200, "reloaded"),
        (vec![("Origin", "http://evil.example"), ("Content-Type", "text/plain")], 403, "Cross-origin"),
        (vec![("Sec-Fetch-Site", "cross-site")], 403, "Cross-origin"),
        (vec![("Origin", "null")], 403, "Cross-origin"),
        (vec![], 200, "reloaded"),
    ] {
        let (got, body) = http_with(exporter.addr, "POST", "/-/reload", &headers).await;
        assert_eq!(got, status, "{headers:?}: {body}");
        assert!(body.contains(needle), "{headers:?}: {body}");
    }
    exporter.stop().await;

    let closed = Running::start_with(&config, app::Options::default()).await;
    closed.wait_ready().await;
    let (got, body) = http(closed.addr, "POST", "/-/reload").await;
    assert_eq!(got, 403, "{body}");
    assert!(body.contains("--web.enable-lifecycle"), "{body}");
    closed.stop().await;
}

/// Issue 16, conventions: `/metrics` is gzipped when the request accepts it (and only
/// then), with `Vary`; the pages live under `--web.route-prefix` (from
/// `--web.external-url`), the metrics at `--web.telemetry-path`, and the status page's
/// links follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_route_prefix_and_telemetry_path() {
    use std::io::Read as _;
    let paths = smtp_exporter::app::Paths::new(None, "/stats", Some("https://proxy.example/smtp/")).unwrap();
    let options = smtp_exporter::app::Options { paths, ..Default::default() };
    let yaml = "modules:\n  m: { tls: none, timeout: 1s }\ntargets:\n  - { name: closed, host: 127.0.0.1, ports: [{ port: 9, module: m }] }\n";
    let exporter = crate::support::InProcess::start_with(yaml.into(), "paths.yml", options).await;
    let addr = exporter.addr;
    let responses = tokio::task::spawn_blocking(move || {
        let mut client = testkit::http::Client::new(addr, Duration::from_secs(10));
        let mut get =
            |path: &str, headers: &[(&str, &str)]| client.request("GET", path, headers, b"").unwrap();
        // The scrapes compared below must see the same families: wait for the one probe
        // (refused at once; the next is a minute away) before the first of them.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !get("/smtp/stats", &[]).text().contains("smtp_probe_success{") {
            assert!(std::time::Instant::now() < deadline, "no probe recorded within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            get("/smtp/stats", &[]),
            get("/smtp/stats", &[("Accept-Encoding", "deflate, gzip;q=0.8")]),
            get("/smtp/stats", &[("Accept-Encoding", "gzip;q=0, br")]),
            get("/metrics", &[]),
            get("/smtp/metrics", &[]),
            get("/smtp/", &[]),
            get("/smtp/-/healthy", &[]),
        )
    })
    .await
    .unwrap();
    let (plain, gzipped, refused, root, old, status, healthy) = responses;
    assert_eq!((plain.status, plain.header("content-encoding")), (200, None));
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!((gzipped.status, gzipped.header("content-encoding")), (200, Some("gzip")));
    let mut text = String::new();
    flate2::read::GzDecoder::new(gzipped.body.as_slice())
        .read_to_string(&mut text)
        .expect("a whole gzip stream");
    let names =
        |t: &str| t.lines().filter(|l| l.starts_with("# TYPE")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(names(&text), names(plain.text()), "the same families, compressed");
    assert!(
        gzipped.body.len() * 3 < plain.body.len(),
        "{} bytes gzipped, {} plain",
        gzipped.body.len(),
        plain.body.len()
    );
    assert_eq!(refused.header("content-encoding"), None, "q=0 refuses gzip");
    assert_eq!((root.status, old.status), (404, 404));
    assert!(root.text().contains("/smtp/"), "the 404 names the status page: {}", root.text());
    assert_eq!((status.status, healthy.status), (200, 200));
    // A page known whole is sent with its length; the streamed exposition in chunks.
    let length = healthy.body.len().to_string();
    assert_eq!(
        (healthy.header("content-length"), healthy.header("transfer-encoding")),
        (Some(length.as_str()), None)
    );
    assert_eq!((plain.header("content-length"), plain.header("transfer-encoding")), (None, Some("chunked")));
    for link in
        ["href=\"/smtp/stats\"", "href=\"/smtp/config\"", "href=\"/smtp/-/ready\"", "href=\"/smtp/probe\""]
    {
        assert!(status.text().contains(link), "{link} missing from the status page");
    }
    exporter.stop().await;
}

/// Issue 16: `/config` shows the configuration as loaded, with every secret replaced: an
/// inline password, at any depth and through a YAML alias, never appears, nor what a
/// password file holds; where a secret is read from is shown.
#[tokio::test]
async fn the_config_page_never_shows_a_secret() {
    let secret = "hunter2-Pa55-secret";
    let file = std::env::temp_dir().join(format!("smtp-exporter-config-page-{}", std::process::id()));
    std::fs::write(&file, "file-held-Pa55\n").unwrap();
    let file = file.display().to_string();
    let yaml = format!(
        "x-anchors: &pw {secret}\nmodules:\n  a:\n    tls: starttls\n    auth: {{ username: monitor, password: {secret}, allow_plaintext: true }}\n  b:\n    tls: starttls\n    auth: {{ username: other, password: *pw }}\n  c:\n    tls: starttls\n    auth: {{ username: third, password_file: {file} }}\ntargets:\n  - {{ host: 127.0.0.1, ports: [{{ port: 9, module: c }}] }}\n"
    );
    // x-anchors is not a key the configuration knows: refused, as every unknown key is.
    assert!(smtp_exporter::config::parse(&yaml, "t").is_err());
    let yaml =
        yaml.replacen(&format!("x-anchors: &pw {secret}\n"), "", 1).replace("*pw", &format!("&pw {secret}"));
    let exporter = crate::support::InProcess::start(yaml, "secrets.yml").await;
    let addr = exporter.addr;
    let (code, page) =
        tokio::task::spawn_blocking(move || testkit::http::get(addr, "/config").unwrap()).await.unwrap();
    assert_eq!(code, 200);
    assert!(
        !page.contains(secret) && !page.contains("hunter2") && !page.contains("file-held"),
        "a secret leaked:\n{page}"
    );
    assert_eq!(page.matches("<secret>").count(), 2, "{page}");
    assert!(page.contains("username: monitor") && page.contains(&format!("password_file: {file}")), "{page}");
    exporter.stop().await;
    let _ = std::fs::remove_file(&file);
}

/// Issue 16, transcripts: `/probe?...&debug=true` answers with the whole session (every
/// line with its time, TLS, the phases) and then the metrics; the AUTH exchange shows
/// neither the password nor any base64 form of the credentials, with PLAIN or LOGIN.
#[tokio::test]
async fn debug_shows_the_session_with_the_credentials_redacted() {
    let pki = TestPki::new();
    let plain = FakeSmtp::start(Behaviour::default(), &pki).await;
    let login =
        FakeSmtp::start(Behaviour { auth_mechanisms: vec!["LOGIN"], ..Behaviour::default() }, &pki).await;
    let password_file = pki.ca_file.with_file_name("password");
    std::fs::write(&password_file, "correct horse").unwrap();
    let config = write_config(&pki, "config.yml", plain.port(), 0, &password_file, false);
    // /probe lends a module's credentials only to a host and port configured with it.
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!(
        "  - {{ name: login, host: 127.0.0.1, ports: [{{ port: {}, module: submission }}] }}\n",
        login.port()
    ));
    std::fs::write(&config, yaml).unwrap();
    let exporter = Running::start(&config).await;
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let forbidden = [
        "correct horse",
        &b64("\0probe@example.test\0correct horse"),
        &b64("correct horse"),
        &b64("probe@example.test"),
    ];
    for (server, shown) in [(&plain, "C: AUTH PLAIN <redacted>"), (&login, "C: <redacted password>")] {
        let path = format!("/probe?target=127.0.0.1:{}&module=submission&debug=true", server.port());
        let (status, body) = http(exporter.addr, "GET", &path).await;
        assert_eq!(status, 200, "{body}");
        for line in [
            "Result: success",
            "C: EHLO ",
            "S: 250-",
            "C: STARTTLS",
            "S: 220 ",
            "*  TLS TLS1.3 ",
            shown,
            "S: 235 ",
            "C: QUIT",
            "Phases (ms): resolve ",
            "Metrics:",
        ] {
            assert!(body.contains(line), "{line:?} missing from:\n{body}");
        }
        for secret in forbidden {
            assert!(!body.contains(secret), "{secret:?} leaked:\n{body}");
        }
        let metrics = parse_exposition(body.split("Metrics:\n").nth(1).unwrap());
        assert_eq!(value(&metrics, "smtp_probe_success", &[("target", "127.0.0.1")]), 1.0);
    }
}

/// Issue 16: a hostile server's flood (two EHLO replies of 140 long lines) stays within
/// the transcript's bounds, and the
/// status page links each failing spec to the transcript of its last failing probe.
#[tokio::test]
async fn transcripts_are_bounded_and_linked_from_the_status_page() {
    let Fixture { pki, exporter, refused_port, .. } = Fixture::start().await;
    // Just under the 16 KiB a reply may have, before and after STARTTLS: 280 lines.
    let flood: Vec<String> = (0..140).map(|i| format!("X-FLOOD-{i:03} {}", "z".repeat(90))).collect();
    let hostile =
        FakeSmtp::start(Behaviour { extra_ehlo_keywords: flood, ..Behaviour::default() }, &pki).await;
    let path = format!("/probe?target=127.0.0.1:{}&module=relay&debug=true", hostile.port());
    let (status, body) = http(exporter.addr, "GET", &path).await;
    assert_eq!(status, 200);
    let transcript = body.split("Transcript").nth(1).unwrap().split("\nPhases").next().unwrap();
    assert!(transcript.lines().count() <= 122, "{} lines", transcript.lines().count());
    assert!(transcript.len() <= 12 * 1024 + 120 * 20 + 300, "{} bytes", transcript.len());
    assert!(transcript.contains("more lines not kept"), "{transcript}");

    let (_, page) = http(exporter.addr, "GET", "/").await;
    let link = format!("/transcript?target=down&amp;port={refused_port}&amp;module=relay");
    assert!(page.contains(&link), "no link {link} on the status page");
    let (status, text) = http(exporter.addr, "GET", &link.replace("&amp;", "&")).await;
    assert_eq!(status, 200, "{text}");
    for line in [
        &format!("*  connect to 127.0.0.1:{refused_port}") as &str,
        "failed in connect: refused",
        "Result: FAILED in phase connect",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // Only the spec named by all of target, port and module is shown.
    for (target, port, module) in
        [("nope", refused_port, "relay"), ("down", 1, "relay"), ("down", refused_port, "submission")]
    {
        let path = format!("/transcript?target={target}&port={port}&module={module}");
        let (status, text) = http(exporter.addr, "GET", &path).await;
        assert_eq!((status, text.as_str()), (404, "No such scheduled spec.\n"), "{path}");
    }
    // The good target has not failed: nothing to show.
    let (status, _) =
        http(exporter.addr, "GET", &format!("/transcript?target=good&port={}&module=submission", 0)).await;
    assert_eq!(status, 404);
}

/// Issue 16, history: `/history` serves each spec's recent results with the uptime over
/// the configured window; `history.results` bounds what is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_served_as_json_within_its_bounds() {
    let closed = free_port();
    let yaml = format!(
        "interval: 1s\nhistory: {{ results: 2, failures: 1 }}\nmodules:\n  m: {{ tls: none, timeout: 500ms }}\ntargets:\n  - {{ name: down, host: 127.0.0.1, ports: [{{ port: {closed}, module: m }}] }}\n"
    );
    let exporter = crate::support::InProcess::start(yaml, "history.yml").await;
    exporter
        .scrape_until(Duration::from_secs(8), "four probes", |s| {
            find(s, "smtp_probes_total", &[("target", "down")]).first().is_some_and(|x| x.value >= 4.0)
        })
        .await;
    let addr = exporter.addr;
    let (status, body) =
        tokio::task::spawn_blocking(move || testkit::http::get(addr, "/history?target=down").unwrap())
            .await
            .unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["window"], 2);
    let spec = &json["specs"][0];
    assert_eq!((spec["target"].as_str(), spec["uptime"].as_f64()), (Some("down"), Some(0.0)));
    let results = spec["results"].as_array().unwrap();
    // Two latest results and one older failure: three, all refused in connect.
    assert_eq!(results.len(), 3, "{body}");
    assert!(
        results.iter().all(|r| r["reason"] == "refused" && r["phase"] == "connect" && r["success"] == false),
        "{body}"
    );
    // When (this year, not before 1970) and how long (a refused connect: a little).
    let this_year = smtp_exporter::logging::format_time(std::time::SystemTime::now())[..4].to_owned();
    assert!(results.iter().all(|r| r["at"].as_str().is_some_and(|at| at.starts_with(&this_year))), "{body}");
    assert!(
        results.iter().all(|r| r["duration_seconds"].as_f64().is_some_and(|d| d > 0.0 && d < 1.0)),
        "{body}"
    );
    // smtp_exporter_history_bytes: the entries kept, 12 bytes each (and room the ring keeps).
    let samples = exporter.scrape().await;
    let bytes = value(&samples, "smtp_exporter_history_bytes", &[]);
    assert!(bytes >= 36.0 && bytes % 12.0 == 0.0 && bytes <= 12.0 * 8.0, "{bytes}");
    let (_, nothing) =
        tokio::task::spawn_blocking(move || testkit::http::get(addr, "/history?target=other").unwrap())
            .await
            .unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&nothing).unwrap()["specs"], serde_json::json!([]));
    exporter.stop().await;
}

/// Issue 17: a reload that removes a domain forgets its walk (no `smtp_domain_*` series
/// left for it), one it adds is walked and probed, and once the exporter stops, no walk
/// asks the name server again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_domains_are_forgotten_and_a_stopped_exporter_walks_no_more() {
    use testkit::dns::{FakeDns, Rr};
    let pki = TestPki::new();
    let server = FakeSmtp::start(Behaviour::default(), &pki).await;
    let dns = FakeDns::start(1).await;
    for domain in ["kept.example.test", "gone.example.test", "added.example.test"] {
        dns.add(domain, Rr::Mx(10, "mx1.example.test".into()));
    }
    dns.add("mx1.example.test", Rr::Addr("127.0.0.1".parse().unwrap()));
    let yaml = |domains: &[&str]| {
        let mut yaml = format!(
            "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s }}\ndomains:\n",
            dns.addr
        );
        for d in domains {
            yaml.push_str(&format!(
                "  - {{ name: {d}, ports: [{{ port: {}, module: relay }}], policy: {{ enabled: false, dane: false }} }}\n",
                server.port()
            ));
        }
        yaml
    };
    let dir = std::env::temp_dir().join(format!("smtp-exporter-forget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yml");
    std::fs::write(&config, yaml(&["kept.example.test", "gone.example.test"])).unwrap();
    let exporter = Running::start(&config).await;
    let walked =
        |m: &[Sample], domain: &str| !find(m, "smtp_domain_deliverable", &[("domain", domain)]).is_empty();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(walked(&exporter.metrics().await, "kept.example.test")
        && walked(&exporter.metrics().await, "gone.example.test"))
    {
        assert!(std::time::Instant::now() < deadline, "both domains walked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&config, yaml(&["kept.example.test", "added.example.test"])).unwrap();
    assert_eq!(http(exporter.addr, "POST", "/-/reload").await.0, 200);
    // A domain the reload adds is walked and its MX probed (the walk's specs reach the
    // scheduler under the new configuration's generation).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while find(&exporter.metrics().await, "smtp_probe_success", &[("target", "added.example.test")])
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "the added domain's MX was not probed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = exporter.metrics().await;
    let gone: Vec<_> = m
        .iter()
        .filter(|s| {
            s.name.starts_with("smtp_domain_")
                && s.labels.get("domain").is_some_and(|d| d == "gone.example.test")
        })
        .collect();
    assert!(gone.is_empty(), "{gone:?}");
    assert!(walked(&m, "kept.example.test"));
    exporter.stop().await;
    let queries = dns.queries();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(dns.queries(), queries, "a walk asked the name server after the exporter stopped");
    std::fs::remove_dir_all(&dir).unwrap();
}
