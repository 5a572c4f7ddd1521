//! Config helpers for the tests; the PKI, the fake SMTP server, the exposition parser and
//! the HTTP client are in the `testkit` crate.

use smtp_exporter::config::{self, ProbeSpec};

/// Builds the single probe spec of a config that has one module (given as YAML lines
/// indented under the module name) and one target on 127.0.0.1:`port`.
pub fn spec(module_yaml: &str, port: u16) -> ProbeSpec {
    spec_expecting(module_yaml, port, "{}")
}

/// Like [`spec`], with the target's `expect` block given as a YAML flow mapping.
pub fn spec_expecting(module_yaml: &str, port: u16, expect: &str) -> ProbeSpec {
    let module: String = module_yaml.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "modules:\n  m:\n{module}targets:\n  - name: fake\n    host: 127.0.0.1\n    ports: [{{ port: {port}, module: m }}]\n    expect: {expect}\n"
    );
    let config = config::parse(&yaml, "test config").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    config.schedule.first().expect("one spec").spec.clone()
}

/// The exporter in this process on a configuration given as text, on 127.0.0.1:0.
pub struct InProcess {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    pub async fn start(yaml: String, origin: &str) -> InProcess {
        InProcess::start_with(yaml, origin, smtp_exporter::app::Options::default()).await
    }

    /// The same, with command-line options.
    pub async fn start_with(yaml: String, origin: &str, options: smtp_exporter::app::Options) -> InProcess {
        use smtp_exporter::app::{self, ConfigSource};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let source = ConfigSource::Text { text: yaml, origin: origin.into() };
        let task = tokio::spawn(async move {
            app::run(listener, source, options, async {
                let _ = stopped.await;
            })
            .await
            .expect("exporter runs");
        });
        InProcess { addr, stop, task }
    }

    /// Stops it and waits (at most 5 s) for a clean shutdown.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(5), self.task)
            .await
            .expect("clean shutdown")
            .unwrap();
    }

    /// One scrape of /metrics, parsed.
    pub async fn scrape(&self) -> Vec<testkit::exposition::Sample> {
        let addr = self.addr;
        let body = tokio::task::spawn_blocking(move || testkit::http::get(addr, "/metrics").expect("scrape"))
            .await
            .unwrap();
        assert_eq!(body.0, 200);
        testkit::exposition::parse_exposition(&body.1)
    }

    /// Scrapes until `ready` holds (at most `within`), and returns that scrape.
    pub async fn scrape_until(
        &self,
        within: std::time::Duration,
        what: &str,
        ready: impl Fn(&[testkit::exposition::Sample]) -> bool,
    ) -> Vec<testkit::exposition::Sample> {
        let start = std::time::Instant::now();
        loop {
            let samples = self.scrape().await;
            if ready(&samples) {
                return samples;
            }
            assert!(start.elapsed() < within, "{what}: not within {within:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The phases a probe ran, in order.
pub fn phases(report: &smtp_exporter::probe::ProbeReport) -> Vec<smtp_exporter::probe::Phase> {
    report.phases.iter().map(|(p, _)| *p).collect()
}

/// Asserts that the probe failed in `phase` with `reason`, showing the detail otherwise.
pub fn assert_failed(
    report: &smtp_exporter::probe::ProbeReport,
    phase: smtp_exporter::probe::Phase,
    reason: smtp_exporter::probe::Reason,
) {
    let failure =
        report.failure.as_ref().unwrap_or_else(|| panic!("expected a failure, got success: {report:?}"));
    assert_eq!((failure.phase, failure.reason), (phase, reason), "detail: {}", failure.detail);
}
