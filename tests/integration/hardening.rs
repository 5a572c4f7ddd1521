//! Issue 26, in-process: the web surface's guards, each against the attack it is for, with
//! the exporter run as `app::run` on a loopback port. The attacks that need many sockets,
//! an open-file limit or a network namespace run against the release binary in the real
//! suite (tests/real/attack.rs).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_exporter::app;
use testkit::exposition::{find, parse_exposition, value};

use crate::exporter::Running;

/// A directory of its own for one test's files.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smtp-exporter-hardening-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration probing one closed port, with `more` appended at the top level.
fn config(dir: &Path, more: &str) -> PathBuf {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "modules:\n  m: {{ tls: none, timeout: 3s }}\ntargets:\n  - {{ name: t, host: 127.0.0.1, ports: [{{ port: {closed}, module: m }}] }}\n{more}"
        ),
    )
    .unwrap();
    path
}

/// The DNS rebinding guard: `/config`, `/transcript`, `/probe?debug=true` and `POST
/// /-/reload` answer only to an address, localhost, the external URL's host or a name
/// given with --web.allowed-host; `/metrics` and a plain `/probe` answer any name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_pages_answer_only_to_the_names_of_the_exporter() {
    let dir = dir("rebinding");
    let config = config(&dir, "");
    let mut paths = app::Paths::new(None, "/metrics", Some("https://proxy.example.net/")).unwrap();
    paths.allowed_hosts.push("exporter.example".into());
    let options = app::Options { enable_lifecycle: true, paths, ..app::Options::default() };
    let exporter = Running::start_with(&config, options).await;
    let port = exporter.addr.port();
    let probe_debug = format!("/probe?target=127.0.0.1:{port}&module=m&debug=true");
    for (method, path) in [
        ("GET", "/config"),
        ("GET", "/transcript?target=t&port=1&module=m"),
        ("POST", "/-/reload"),
        ("GET", probe_debug.as_str()),
    ] {
        let (status, body) = exporter.request(method, path, &[("Host", "evil.example:10027")]).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("a guard against DNS rebinding"), "{body}");
        for host in ["127.0.0.1", "localhost:10027", "exporter.example", "proxy.example.net", "[::1]:10027"] {
            let (status, body) = exporter.request(method, path, &[("Host", host)]).await;
            assert_ne!(status, 403, "{method} {path} as {host}: {body}");
        }
    }
    assert_eq!(exporter.request("GET", "/metrics", &[("Host", "evil.example")]).await.0, 200);
    let probe = format!("/probe?target=127.0.0.1:{port}&module=m");
    assert_ne!(exporter.request("GET", &probe, &[("Host", "evil.example")]).await.0, 403);
    exporter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Authorization: Basic` for `user:password`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// `smtp_exporter_web_config_last_reload_successful`, scraped with `auth`.
async fn reload_gauge(exporter: &Running, auth: &str) -> f64 {
    let (status, body) = exporter.request("GET", "/metrics", &[("Authorization", auth)]).await;
    assert_eq!(status, 200, "{body}");
    value(&parse_exposition(&body), "smtp_exporter_web_config_last_reload_successful", &[])
}

/// A web configuration that turns authentication off while it is on (an emptied file, a
/// file of comments, `---`) is refused at run time: requests still need the password, and
/// the reload gauge says 0. One that raises the guard (another user) is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_config_that_would_turn_the_password_off_is_refused() {
    let dir = dir("web-lowered");
    let config = config(&dir, "");
    let web = dir.join("web.yml");
    let hash = bcrypt::hash("right", 4).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  prom: {hash}\n")).unwrap();
    let options = app::Options { web_config_file: Some(web.clone()), ..app::Options::default() };
    let exporter = Running::start_with(&config, options).await;
    let auth = basic("prom", "right");
    assert_eq!(exporter.request("GET", "/metrics", &[]).await.0, 401);
    for lowered in ["", "# the file is being rewritten\n", "---\n"] {
        std::fs::write(&web, lowered).unwrap();
        // The file is looked at again at most once a second, as requests come.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(exporter.request("GET", "/metrics", &[]).await.0, 401, "{lowered:?}");
        assert_eq!(reload_gauge(&exporter, &auth).await, 0.0, "{lowered:?}");
    }
    let second = bcrypt::hash("other", 4).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  prom: {hash}\n  grafana: {second}\n")).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(exporter.request("GET", "/metrics", &[]).await.0, 401);
    assert_eq!(reload_gauge(&exporter, &auth).await, 1.0);
    let grafana = basic("grafana", "other");
    assert_eq!(exporter.request("GET", "/metrics", &[("Authorization", grafana.as_str())]).await.0, 200);
    exporter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A wrong password's 401 closes its connection: requests pipelined behind it are not
/// answered on it (they would each hold the connection for a bcrypt check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_closes_its_connection() {
    let dir = dir("wrong-password");
    let config = config(&dir, "");
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prom: {}\n", bcrypt::hash("right", 4).unwrap()))
        .unwrap();
    let options = app::Options { web_config_file: Some(web), ..app::Options::default() };
    let exporter = Running::start_with(&config, options).await;
    let addr = exporter.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let wrong = basic("prom", "wrong");
        let one = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {wrong}\r\n\r\n");
        s.write_all(one.repeat(3).as_bytes()).unwrap();
        let mut all = String::new();
        let _ = s.read_to_string(&mut all);
        all
    })
    .await
    .unwrap();
    assert_eq!(answers.matches("HTTP/1.1 401").count(), 1, "{answers}");
    assert!(answers.to_ascii_lowercase().contains("connection: close"), "{answers}");
    exporter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/probe` takes a `max_concurrency` permit like a scheduled probe: against a server
/// that never answers, at most `max_concurrency` connections are open at once, and the
/// requests beyond are answered 503 within a second or so, not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_probes_obey_max_concurrency() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let dir = dir("probe-limit");
    // The configured target is the silent server, so that /probe may probe it.
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "max_concurrency: 2\ninterval: 1h\nmodules:\n  m: {{ tls: none, timeout: 3s }}\ntargets:\n  - {{ name: s, host: 127.0.0.1, ports: [{{ port: {port}, module: m }}] }}\n"
        ),
    )
    .unwrap();
    let exporter = Arc::new(Running::start_with(&path, app::Options::default()).await);
    // The scheduled probe of the spec holds one permit for its 3 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut requests = Vec::new();
    for _ in 0..6 {
        let exporter = exporter.clone();
        let path = format!("/probe?target=127.0.0.1:{port}&module=m");
        requests.push(tokio::spawn(async move {
            let (status, body) = exporter.request("GET", &path, &[]).await;
            (status, body, started.elapsed())
        }));
    }
    let mut answered = Vec::new();
    for request in requests {
        answered.push(request.await.unwrap());
    }
    let refused: Vec<_> = answered.iter().filter(|(status, _, _)| *status == 503).collect();
    assert!(refused.len() >= 5, "{answered:?}");
    assert!(
        refused.iter().all(|(_, body, at)| body.contains("max_concurrency") && *at < Duration::from_secs(3)),
        "{answered:?}"
    );
    assert!(
        accepted.load(Ordering::SeqCst) <= 2,
        "{} connections with max_concurrency 2",
        accepted.load(Ordering::SeqCst)
    );
    Arc::try_unwrap(exporter).ok().expect("one owner left").stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A name that resolves to a link-local, unspecified, multicast or broadcast address is
/// not probed: a configured host fails `resolve` as `dns_address_refused`, a domain's MX
/// that does gets no spec (`address_refused`), and nothing is connected to;
/// `dns.refuse_addresses: []` lifts the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_resolve_to_refused_addresses_are_not_probed() {
    let dns = testkit::dns::FakeDns::start(60).await;
    dns.add("metadata.example.test", testkit::dns::Rr::Addr("169.254.169.254".parse().unwrap()))
        .add("self.example.test", testkit::dns::Rr::Addr("0.0.0.0".parse().unwrap()))
        .add("evil.example.test", testkit::dns::Rr::Mx(10, "metadata.example.test".into()));
    let dir = dir("refused-addresses");
    // (Never lifted for 169.254.169.254: a test connects to nothing but loopback.)
    let write = |refuse: &str, meta: bool| {
        let path = dir.join("config.yml");
        let meta = if meta {
            "  - { name: meta, host: metadata.example.test, ports: [{ port: 80, module: m }] }\n"
        } else {
            ""
        };
        std::fs::write(
            &path,
            format!(
                "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\n{refuse}modules:\n  m: {{ tls: none, timeout: 1s }}\ntargets:\n{meta}  - {{ name: self, host: self.example.test, ports: [{{ port: 9, module: m }}] }}\ndomains:\n  - {{ name: evil.example.test, ports: [{{ port: 25, module: m }}] }}\n",
                dns.addr
            ),
        )
        .unwrap();
        path
    };
    let exporter = Running::start_with(&write("", true), app::Options::default()).await;
    let samples = loop {
        let (_, body) = exporter.request("GET", "/metrics", &[]).await;
        let samples = parse_exposition(&body);
        if find(&samples, "smtp_probe_success", &[]).len() == 2
            && !find(&samples, "smtp_domain_dns_failure_info", &[]).is_empty()
        {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for target in ["meta", "self"] {
        let failure = [("target", target), ("phase", "resolve"), ("reason", "dns_address_refused")];
        assert_eq!(value(&samples, "smtp_probe_failure_info", &failure), 1.0, "{target}");
    }
    let domain = [("domain", "evil.example.test"), ("reason", "address_refused")];
    assert_eq!(value(&samples, "smtp_domain_dns_failure_info", &domain), 1.0);
    assert!(find(&samples, "smtp_probe_success", &[("target", "evil.example.test")]).is_empty());
    exporter.stop().await;
    // Lifted: the name of this host's unspecified address is probed (and refused by the
    // closed port, not by the guard).
    let exporter =
        Running::start_with(&write("  refuse_addresses: []\n", false), app::Options::default()).await;
    let samples = loop {
        let (_, body) = exporter.request("GET", "/metrics", &[]).await;
        let samples = parse_exposition(&body);
        if find(&samples, "smtp_probe_success", &[("target", "self")]).len() == 1 {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(find(&samples, "smtp_probe_failure_info", &[("target", "self"), ("phase", "resolve")]).is_empty());
    exporter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
