//! The application: wires config → scheduler → metrics → http and handles reloads.
//!
//! `main` parses the command line and calls [`run`] with a bound listener and a shutdown
//! future; the end-to-end tests call it the same way on port 0. [`run`] owns the scheduler
//! and is the only place that swaps the configuration: on SIGHUP or `POST /-/reload` it
//! loads the source again, and keeps the old configuration when the new one is bad.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use std::collections::HashMap;

use crate::config::{self, Config, ConfigError, Scheduled, Shard};
use crate::domains::{Derived, Resolutions, Walkers};
/// Where the pages are served (`--web.route-prefix`, `--web.telemetry-path`,
/// `--web.external-url`).
pub use crate::http::paths::Paths;
use crate::http::{self, ReloadRequest};
use crate::metrics::Exporter;
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Where the configuration comes from; read again on every reload.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A YAML file.
    File(PathBuf),
    /// YAML text held in memory (the embedded default, or a test's config); `origin`
    /// names it in errors.
    Text { text: String, origin: String },
}

impl ConfigSource {
    /// The embedded default configuration.
    pub fn embedded() -> ConfigSource {
        ConfigSource::Text {
            text: config::EMBEDDED_DEFAULT.to_owned(),
            origin: "<embedded default>".to_owned(),
        }
    }

    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => config::load(path),
            ConfigSource::Text { text, origin } => config::parse(text, origin),
        }
    }
}

/// A configuration loaded and ready to serve: what [`serve`] needs, made before anything
/// listens, so that a bad configuration fails the start before "listening" is logged.
pub struct Prepared {
    source: Sharded,
    config: Config,
    web: Arc<http::web::WebSettings>,
    enable_lifecycle: bool,
    paths: http::paths::Paths,
}

/// How the exporter runs, beside its configuration: the command line's choices.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Probe only this shard's specs (`--shard`).
    pub shard: Option<Shard>,
    /// TLS, basic authentication and headers (`--web.config.file`).
    pub web_config_file: Option<PathBuf>,
    /// Serve `POST /-/reload` (`--web.enable-lifecycle`).
    pub enable_lifecycle: bool,
    /// `--web.route-prefix`, `--web.telemetry-path`, `--web.external-url`.
    pub paths: http::paths::Paths,
}

/// Why the exporter cannot start: its configuration or its web configuration.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Web(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::Web(e) => write!(f, "web configuration: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Prepared {
    /// The loaded configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Loads the first configuration and the web configuration. With a shard, only the specs
/// that shard owns are kept.
pub fn prepare(source: ConfigSource, options: &Options) -> Result<Prepared, StartError> {
    let source = Sharded { source, shard: options.shard };
    let config = source.load().map_err(StartError::Config)?;
    let gauge = prometheus::IntGauge::new(
        "smtp_exporter_web_config_last_reload_successful",
        "1 if the web configuration (--web.config.file) last read was valid, else 0 (the previous one stays in force).",
    )
    .expect("web config gauge");
    let web = http::web::WebSettings::new(options.web_config_file.clone(), gauge).map_err(StartError::Web)?;
    Ok(Prepared {
        source,
        config,
        web: Arc::new(web),
        enable_lifecycle: options.enable_lifecycle,
        paths: options.paths.clone(),
    })
}

/// Checks a web configuration file (for `--config.check`).
pub fn check_web_config(path: &std::path::Path) -> Result<(), String> {
    http::web::WebConfig::load(path).map(|_| ())
}

/// Loads the configuration, then serves on `listener` until `shutdown` resolves; the
/// end-to-end tests start the exporter this way. Fails only when the first load fails;
/// later reload failures are logged and counted.
pub async fn run(
    listener: TcpListener,
    source: ConfigSource,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    serve(prepare(source, &options)?, listener, shutdown).await;
    Ok(())
}

/// Runs the exporter on a prepared configuration until `shutdown` resolves.
pub async fn serve(prepared: Prepared, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let Prepared { source, config, web, enable_lifecycle, paths } = prepared;
    let open_files = open_file_limit();
    check_open_files(open_files, &config);
    // Kept for the reload that would fix a configuration whose probes use up the rest.
    let mut reserve = FdReserve::take();
    // Before the first probes, so that a failure to listen for SIGHUP is logged at start.
    let mut hangups = hangup_signals();
    let store = Arc::new(Store::new());
    let resolutions = Arc::new(Resolutions::default());
    let exporter = Arc::new(Exporter::new(store.clone(), resolutions.clone()));
    exporter.register(Box::new(web.reload_successful.clone()));
    exporter.config_loaded(true);
    let (derived_tx, mut derived_rx) = mpsc::unbounded_channel::<Derived>();
    let mut fleet = Fleet {
        scheduler: Scheduler::new(store.clone(), exporter.schedule.clone()),
        store,
        walkers: Walkers::new(derived_tx, resolutions),
        derived: HashMap::new(),
    };
    fleet.configure(&config);
    log_warnings(&config);
    tracing::info!(
        specs = config.schedule.len(),
        expansions = config.expansions.len(),
        max_concurrency = config.max_concurrency,
        "configuration loaded"
    );

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let shared = Arc::new(http::Shared {
        exporter: exporter.clone(),
        reload: reload_tx,
        config: std::sync::RwLock::new(Arc::new(config)),
        web,
        enable_lifecycle,
        renders: Arc::default(),
        paths,
        probe_limit: fleet.scheduler.limit(),
    });
    let server = tokio::spawn(http::serve(listener, shared.clone(), async {
        let _ = http_stopped.await;
    }));

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(answer) = reload_rx.recv() => {
                let _ = answer.send(reload(&source, &mut fleet, &shared, open_files, &mut reserve).await);
            }
            Some(()) = hangups.recv() => {
                let _ = reload(&source, &mut fleet, &shared, open_files, &mut reserve).await;
            }
            Some(first) = derived_rx.recv() => {
                // A burst of walks (a fleet of domains starting) is applied once.
                let mut changed = fleet.take(first);
                while let Ok(more) = derived_rx.try_recv() {
                    changed |= fleet.take(more);
                }
                if changed {
                    let config = shared.config.read().expect("config lock").clone();
                    fleet.schedule(&config);
                }
            }
        }
    }
    tracing::info!("shutting down");
    fleet.walkers.stop().await;
    fleet.scheduler.stop().await;
    let _ = stop_http.send(());
    let _ = server.await;
}

/// Logs what the configuration loads with but probably does not mean.
fn log_warnings(config: &Config) {
    for warning in &config.warnings {
        tracing::warn!(warning = %warning, "configuration warning");
    }
}

/// A configuration source seen through a shard.
struct Sharded {
    source: ConfigSource,
    shard: Option<Shard>,
}

impl Sharded {
    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = self.source.load()?;
        if let Some(shard) = self.shard {
            let all = config.schedule.len();
            config.keep_shard(shard);
            tracing::info!(
                shard = shard.index,
                of = shard.count,
                specs = config.schedule.len(),
                all,
                "sharded"
            );
        }
        Ok(config)
    }
}

/// The scheduler, the domain walks, and the specs the walks made: what a configuration
/// and DNS together say to probe.
struct Fleet {
    scheduler: Scheduler,
    walkers: Walkers,
    store: Arc<Store>,
    /// The latest specs of each expansion, by name.
    derived: HashMap<String, Vec<Arc<Scheduled>>>,
}

impl Fleet {
    /// Takes on `config`: the walks start again (expansions kept keep their specs until
    /// their first walk replaces them), and the scheduler gets the new set.
    fn configure(&mut self, config: &Config) {
        let names: std::collections::HashSet<&str> =
            config.expansions.iter().map(|e| e.name.as_str()).collect();
        self.derived.retain(|name, _| names.contains(name.as_str()));
        self.walkers.apply(config, &self.derived);
        self.schedule(config);
    }

    /// Records a walk's specs; false when it belongs to an older configuration.
    fn take(&mut self, derived: Derived) -> bool {
        if derived.generation != self.walkers.generation() {
            return false;
        }
        self.derived.insert(derived.name, derived.specs);
        true
    }

    /// Hands the scheduler the configured specs and every walk's specs.
    fn schedule(&mut self, config: &Config) {
        self.store.set_history_bounds(config.history);
        let all: Vec<Arc<Scheduled>> =
            config.schedule.iter().chain(self.derived.values().flatten()).cloned().collect();
        self.scheduler.apply(&all, config.max_concurrency);
    }
}

/// Loads the configuration again and applies it, or keeps the old one.
async fn reload(
    source: &Sharded,
    fleet: &mut Fleet,
    shared: &http::Shared,
    open_files: Option<u64>,
    reserve: &mut FdReserve,
) -> Result<(), ConfigError> {
    let exporter = &shared.exporter;
    match reserve.load(|| source.load()).await {
        Ok(config) => {
            check_open_files(open_files, &config);
            fleet.configure(&config);
            exporter.config_loaded(true);
            log_warnings(&config);
            let specs = config.schedule.len();
            *shared.config.write().expect("config lock") = Arc::new(config);
            tracing::info!(specs, "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            exporter.config_loaded(false);
            tracing::error!(error = %e, "reload failed; keeping the previous configuration");
            Err(e)
        }
    }
}

/// File descriptors held back at start and let go for the length of a reload: when
/// probes have taken every other descriptor, the reload that lowers `max_concurrency`
/// can still read its files.
struct FdReserve(Vec<std::fs::File>);

/// How many descriptors the reserve holds: the configuration, its password and token
/// files, the trust anchors, a resolv.conf.
const FD_RESERVE: usize = 16;

impl FdReserve {
    fn take() -> FdReserve {
        FdReserve((0..FD_RESERVE).map_while(|_| std::fs::File::open(RESERVE_FILE).ok()).collect())
    }

    /// Runs `load` with the reserve's descriptors free, then takes them back. Probes on
    /// other threads may take a freed descriptor first: a failed load is tried again, a
    /// few times, after a moment (a configuration that is bad anyway is read thrice).
    async fn load<T, E>(&mut self, load: impl Fn() -> Result<T, E>) -> Result<T, E> {
        self.0.clear();
        let mut result = load();
        for _ in 1..LOAD_ATTEMPTS {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            result = load();
        }
        *self = FdReserve::take();
        result
    }
}

/// How many times a reload reads the configuration before it gives up.
const LOAD_ATTEMPTS: usize = 3;

/// What the reserve's descriptors are opened on.
#[cfg(unix)]
const RESERVE_FILE: &str = "/dev/null";
#[cfg(not(unix))]
const RESERVE_FILE: &str = "NUL";

/// The open-file limit, raised to the hard limit first and logged.
fn open_file_limit() -> Option<u64> {
    let (before, after) = crate::sys::raise_open_file_limit()?;
    if after > before {
        tracing::info!(from = before, to = after, "open-file limit raised to the hard limit");
    } else {
        tracing::info!(limit = after, "open-file limit");
    }
    Some(after)
}

/// The file descriptors a configuration may hold at once: two per probe (a delivery
/// probe holds SMTP and IMAP), the HTTP connections, the reserve, and some for the
/// resolver, the listener and the log.
fn descriptors_needed(config: &Config) -> u64 {
    let probes = u64::try_from(config.max_concurrency).unwrap_or(u64::MAX).saturating_mul(2);
    probes.saturating_add((http::MAX_CONNECTIONS + FD_RESERVE + 64) as u64)
}

/// Warns when `config` can hold more descriptors than the limit allows: probes would then
/// fail as `local_resources` and connections be refused.
fn check_open_files(limit: Option<u64>, config: &Config) {
    let needed = descriptors_needed(config);
    if let Some(limit) = limit.filter(|&limit| limit < needed) {
        tracing::warn!(
            limit,
            needed,
            max_concurrency = config.max_concurrency,
            "max_concurrency and the HTTP connections can hold more file descriptors than the open-file limit allows: raise the limit (LimitNOFILE, ulimit -n) or lower max_concurrency"
        );
    }
}

/// SIGHUP as a stream of unit values (never yields where signals are unavailable).
fn hangup_signals() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if tx.send(()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; use POST /-/reload"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
