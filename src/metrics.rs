//! Metrics: the latest `ProbeReport` of each spec, turned into Prometheus series on scrape.
//!
//! Fourth stop of the data flow. The scheduler hands each finished report to
//! [`Store::record`]; nothing is computed then. On scrape, the store is snapshotted (the
//! lock is held only to clone `Arc`s) and every probe family is written afresh, so a spec
//! removed by a reload leaves no stale series, and a phase that did not run in the last
//! probe has no series either.
//!
//! Probe series are written straight into the text exposition rather than built as
//! `prometheus` crate protobuf structures: at 10,000 specs (740,000 series) building,
//! sorting and dropping those structures took 1.4 s per scrape and left 1 GiB of heap
//! behind (see BENCHMARKS.md). The `prometheus` registry still serves the exporter's own
//! and the process metrics, which [`Exporter::render`] puts first.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::UNIX_EPOCH;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

use crate::config::{ProbeSpec, Scheduled, SpecKey};
use crate::probe::{PortState, ProbeReport, Reason};

/// What the store keeps per spec.
#[derive(Default)]
struct SpecState {
    /// The module's `ehlo_metrics` setting, refreshed on every reconcile.
    ehlo_metrics: bool,
    last: Option<Arc<ProbeReport>>,
    probes_total: u64,
    failures_total: BTreeMap<Reason, u64>,
}

/// The latest report and counters of every configured spec. Shared by the scheduler
/// (writer) and the renderers (readers); locks are held only to copy or swap an `Arc`.
#[derive(Default)]
pub struct Store {
    specs: RwLock<BTreeMap<SpecKey, SpecState>>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Keeps exactly the configured `specs`: new ones start empty, removed ones lose their
    /// state and series, kept ones keep their counters and take the new settings.
    pub fn reconcile(&self, configured: &[Scheduled]) {
        let wanted: BTreeMap<SpecKey, bool> =
            configured.iter().map(|s| (s.spec.key(), s.spec.module.ehlo_metrics)).collect();
        let mut specs = self.specs.write().expect("metrics store lock");
        specs.retain(|k, _| wanted.contains_key(k));
        for (key, ehlo_metrics) in wanted {
            specs.entry(key).or_default().ehlo_metrics = ehlo_metrics;
        }
    }

    /// Records a finished probe. A report for a spec that is no longer configured (its
    /// probe was in flight during a reload) is dropped.
    pub fn record(&self, key: &SpecKey, report: ProbeReport) {
        let mut specs = self.specs.write().expect("metrics store lock");
        if let Some(state) = specs.get_mut(key) {
            state.probes_total += 1;
            if let Some(failure) = &report.failure {
                *state.failures_total.entry(failure.reason).or_default() += 1;
            }
            state.last = Some(Arc::new(report));
        }
    }

    /// True once every configured spec has completed at least one probe.
    pub fn all_probed(&self) -> bool {
        self.specs.read().expect("metrics store lock").values().all(|s| s.last.is_some())
    }

    /// What a scrape needs, copied out under the lock: the specs that have a report, in
    /// label order, with their counters.
    fn rows(&self) -> Vec<Row> {
        let specs = self.specs.read().expect("metrics store lock");
        specs
            .iter()
            .filter_map(|(key, state)| {
                state.last.clone().map(|report| Row {
                    key: key.clone(),
                    report,
                    ehlo_metrics: state.ehlo_metrics,
                    probes_total: state.probes_total,
                    failures_total: state.failures_total.iter().map(|(r, n)| (*r, *n)).collect(),
                })
            })
            .collect()
    }

    /// Every configured spec with its latest report (`None` before the first probe), in
    /// label order.
    pub fn snapshot(&self) -> Vec<(SpecKey, Option<Arc<ProbeReport>>)> {
        let specs = self.specs.read().expect("metrics store lock");
        specs.iter().map(|(k, s)| (k.clone(), s.last.clone())).collect()
    }
}

/// Where the reports being rendered come from; it decides the HELP wording and
/// whether the counters are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The scheduler's latest report per spec (`/metrics`).
    Scheduled,
    /// One probe made for this request (`/probe`); no counters.
    OnDemand,
}

/// One probe metric family.
struct Family {
    name: &'static str,
    help: String,
    kind: Kind,
    /// Labels beyond target, port, module.
    extra_labels: &'static [&'static str],
}

/// The fixed EHLO keywords exported by `smtp_ehlo_extension`.
pub const EHLO_EXTENSIONS: [&str; 9] = [
    "STARTTLS",
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
    "REQUIRETLS",
];

/// The SASL mechanisms exported by `smtp_ehlo_auth_mechanism` (a fixed list keeps the
/// label bounded whatever a server advertises).
pub const AUTH_MECHANISMS: [&str; 10] = [
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "XOAUTH2",
    "OAUTHBEARER",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "DIGEST-MD5",
    "GSSAPI",
    "NTLM",
];

/// A metric family's type, as the exposition names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

const GAUGE: Kind = Kind::Gauge;
const COUNTER: Kind = Kind::Counter;

fn families(source: Source) -> Vec<Family> {
    let f = |name, help: &str, kind, extra_labels| Family {
        name,
        help: match source {
            Source::Scheduled => help.replace("{src}", "(from the last scheduled probe)"),
            Source::OnDemand => {
                help.replace("{src}", "(from this probe)").replace("the last scheduled probe", "this probe")
            }
        },
        kind,
        extra_labels,
    };
    let all = vec![
        f("smtp_probe_success", "1 if every phase of the module succeeded, else 0 {src}.", GAUGE, &[]),
        f("smtp_probe_duration_seconds", "Duration of the whole probe {src}.", GAUGE, &[]),
        f("smtp_probe_phase_duration_seconds", "Duration of each phase that ran {src}; a failed phase is included.", GAUGE, &["phase"]),
        f("smtp_probe_failure_info", "1 with the phase and reason of the failure, present only while the last scheduled probe failed.", GAUGE, &["phase", "reason"]),
        f("smtp_probe_last_run_timestamp_seconds", "Unix time at which the last scheduled probe started.", GAUGE, &[]),
        f("smtp_probe_banner_code", "Reply code of the server greeting {src}.", GAUGE, &[]),
        f("smtp_probe_banner_info", "1 with the hostname the greeting announced (first word after 220) {src}.", GAUGE, &["hostname"]),
        f("smtp_probe_bare_lf_lines", "Reply lines that ended in a bare LF instead of CRLF {src}.", GAUGE, &[]),
        f("smtp_port_state", "1 for the port's current state, 0 for the others {src}: open, refused, filtered, unreachable, no_route, silent, closed_early, unresolved.", GAUGE, &["state"]),
        f("smtp_starttls_advertised", "1 if EHLO before TLS listed STARTTLS, else 0 {src}.", GAUGE, &[]),
        f("smtp_probe_expectation_failed", "1 if the target's expectation did not hold, 0 if it did {src}.", GAUGE, &["check"]),
        f("smtp_tls_version_info", "1 with the negotiated TLS version {src}.", GAUGE, &["version"]),
        f("smtp_tls_cipher_info", "1 with the negotiated cipher suite {src}.", GAUGE, &["cipher"]),
        f("smtp_tls_kx_group_info", "1 with the key-exchange group of the handshake {src}.", GAUGE, &["group"]),
        f("smtp_tls_cert_verified", "1 if the server certificate verified against the module's roots and name, else 0 {src}.", GAUGE, &[]),
        f("smtp_tls_cert_error_info", "1 with why the certificate did not verify, present only while it does not {src}.", GAUGE, &["error"]),
        f("smtp_tls_cert_expiry_timestamp_seconds", "Unix time at which the leaf certificate expires (notAfter) {src}.", GAUGE, &[]),
        f("smtp_tls_chain_earliest_expiry_timestamp_seconds", "Earliest notAfter among the certificates the server presented {src}.", GAUGE, &[]),
        f("smtp_tls_cert_info", "1 with the leaf certificate's subject and issuer common names, serial and SHA-256 fingerprint {src}.", GAUGE, &["subject_cn", "issuer_cn", "serial", "fingerprint_sha256"]),
        f("smtp_auth_success", "1 if AUTH succeeded, 0 if it failed or could not run {src}; absent for modules without credentials.", GAUGE, &[]),
        f("smtp_auth_reply_code", "Code of the last reply in the AUTH exchange {src}.", GAUGE, &[]),
        f("smtp_ehlo_extension", "1 if EHLO advertised the extension, else 0, in the plain or TLS session {src}.", GAUGE, &["extension", "session"]),
        f("smtp_ehlo_auth_mechanism", "1 if EHLO advertised the SASL mechanism, else 0, in the plain or TLS session {src}.", GAUGE, &["mechanism", "session"]),
        f("smtp_ehlo_size_limit_bytes", "Message size limit from the SIZE extension (0: no fixed limit), in the plain or TLS session {src}.", GAUGE, &["session"]),
        f("smtp_probes_total", "Scheduled probes completed since the exporter started.", COUNTER, &[]),
        f("smtp_probe_failures_total", "Scheduled probes that failed since the exporter started, by reason.", COUNTER, &["reason"]),
    ];
    match source {
        Source::Scheduled => all,
        Source::OnDemand => all.into_iter().filter(|f| f.kind != COUNTER).collect(),
    }
}

/// One spec's data for a scrape.
struct Row {
    key: SpecKey,
    report: Arc<ProbeReport>,
    ehlo_metrics: bool,
    probes_total: u64,
    failures_total: Vec<(Reason, u64)>,
}

/// The families of one source with their headers, built once.
struct Layout {
    families: Vec<Family>,
    /// Family name → position in `families`.
    index: HashMap<&'static str, usize>,
    has_counters: bool,
    /// Bytes each family took in the previous render, to size its buffer up front instead
    /// of growing it by doubling through a large scrape.
    last_sizes: Vec<std::sync::atomic::AtomicUsize>,
}

fn layout(source: Source) -> &'static Layout {
    static SCHEDULED: OnceLock<Layout> = OnceLock::new();
    static ON_DEMAND: OnceLock<Layout> = OnceLock::new();
    let cell = match source {
        Source::Scheduled => &SCHEDULED,
        Source::OnDemand => &ON_DEMAND,
    };
    cell.get_or_init(|| {
        let families = families(source);
        let index = families.iter().enumerate().map(|(i, f)| (f.name, i)).collect();
        let has_counters = families.iter().any(|f| f.kind == COUNTER);
        let last_sizes = families.iter().map(|_| std::sync::atomic::AtomicUsize::new(0)).collect();
        Layout { families, index, has_counters, last_sizes }
    })
}

/// Appends a label value escaped for the text format (backslash, quote, newline).
fn push_escaped(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

/// `target="…",port="…",module="…"`, escaped once per spec and scrape.
fn base_labels(key: &SpecKey) -> Vec<u8> {
    let mut base = Vec::with_capacity(key.target.len() + key.module.len() + 32);
    base.extend_from_slice(b"target=\"");
    push_escaped(&mut base, &key.target);
    let _ = write!(base, "\",port=\"{}\",module=\"", key.port);
    push_escaped(&mut base, &key.module);
    base.push(b'"');
    base
}

/// Writes every probe family of `rows` into `out`, headers included.
fn write_probe_families(out: &mut Vec<u8>, rows: &[Row], source: Source) {
    let layout = layout(source);
    use std::sync::atomic::Ordering::Relaxed;
    let mut buffers: Vec<Vec<u8>> =
        layout.last_sizes.iter().map(|n| Vec::with_capacity(n.load(Relaxed) + n.load(Relaxed) / 8)).collect();
    let mut sink = Out { buffers: &mut buffers, layout };
    for row in rows {
        let base = base_labels(&row.key);
        record_report(&mut sink, &base, &row.report, row.ehlo_metrics);
        if layout.has_counters {
            sink.push("smtp_probes_total", &base, &[], row.probes_total as f64);
            for (reason, count) in &row.failures_total {
                sink.push("smtp_probe_failures_total", &base, &[("reason", reason.as_str())], *count as f64);
            }
        }
    }
    let total: usize = buffers.iter().map(Vec::len).sum();
    out.reserve(total + layout.families.len() * 256);
    for ((family, lines), size) in layout.families.iter().zip(buffers).zip(&layout.last_sizes) {
        size.store(lines.len(), Relaxed);
        if lines.is_empty() {
            continue;
        }
        let kind = match family.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = write!(out, "# HELP {} {}\n# TYPE {} {kind}\n", family.name, family.help, family.name);
        out.extend_from_slice(&lines);
    }
}

/// Server-supplied text made safe for a label value: printable ASCII and spaces, at most 64
/// characters, so a hostile greeting cannot bloat the exposition.
fn label_safe(text: &str) -> String {
    text.chars().take(64).map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '_' }).collect()
}

/// The per-family line buffers of one scrape.
struct Out<'a> {
    buffers: &'a mut Vec<Vec<u8>>,
    layout: &'a Layout,
}

impl Out<'_> {
    /// Writes `family{base,extra…} value`.
    fn push(&mut self, family: &str, base: &[u8], extra: &[(&str, &str)], value: f64) {
        let i = self.layout.index[family];
        debug_assert!(
            extra.iter().map(|(name, _)| *name).eq(self.layout.families[i].extra_labels.iter().copied()),
            "labels of {family} differ from its declaration"
        );
        let buf = &mut self.buffers[i];
        buf.extend_from_slice(family.as_bytes());
        buf.push(b'{');
        buf.extend_from_slice(base);
        for (name, v) in extra {
            buf.push(b',');
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b"=\"");
            push_escaped(buf, v);
            buf.push(b'"');
        }
        buf.extend_from_slice(b"} ");
        push_value(buf, value);
        buf.push(b'\n');
    }
}

/// Appends a sample value. Most values are 0, 1 or whole numbers (codes, counters,
/// timestamps in seconds); those skip the float formatter.
fn push_value(out: &mut Vec<u8>, value: f64) {
    if value == 0.0 {
        out.push(b'0');
    } else if value == 1.0 {
        out.push(b'1');
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The series one report contributes (all but the counters, which live in the store).
fn record_report(out: &mut Out<'_>, base: &[u8], report: &ProbeReport, ehlo_metrics: bool) {
    out.push("smtp_probe_success", base, &[], bool_value(report.success()));
    out.push("smtp_probe_duration_seconds", base, &[], report.duration.as_secs_f64());
    for (p, d) in &report.phases {
        out.push("smtp_probe_phase_duration_seconds", base, &[("phase", p.as_str())], d.as_secs_f64());
    }
    if let Some(f) = &report.failure {
        out.push(
            "smtp_probe_failure_info",
            base,
            &[("phase", f.phase.as_str()), ("reason", f.reason.as_str())],
            1.0,
        );
    }
    let started = report.started_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    out.push("smtp_probe_last_run_timestamp_seconds", base, &[], started);
    if let Some(code) = report.banner_code {
        out.push("smtp_probe_banner_code", base, &[], f64::from(code));
    }
    if let Some(hostname) = &report.banner_hostname {
        out.push("smtp_probe_banner_info", base, &[("hostname", &label_safe(hostname))], 1.0);
    }
    out.push("smtp_probe_bare_lf_lines", base, &[], f64::from(report.bare_lf_lines));
    let current = report.port_state();
    for st in PortState::ALL {
        out.push("smtp_port_state", base, &[("state", st.as_str())], bool_value(st == current));
    }
    if let Some(advertised) = report.starttls_advertised() {
        out.push("smtp_starttls_advertised", base, &[], bool_value(advertised));
    }
    for (check, passed) in &report.expectations {
        out.push("smtp_probe_expectation_failed", base, &[("check", check.as_str())], bool_value(!passed));
    }
    if let Some(tls) = &report.tls {
        out.push("smtp_tls_version_info", base, &[("version", &tls.version)], 1.0);
        out.push("smtp_tls_cipher_info", base, &[("cipher", &tls.cipher)], 1.0);
        if let Some(group) = &tls.kx_group {
            out.push("smtp_tls_kx_group_info", base, &[("group", group)], 1.0);
        }
        out.push("smtp_tls_cert_verified", base, &[], bool_value(tls.cert_error.is_none()));
        if let Some(error) = tls.cert_error {
            out.push("smtp_tls_cert_error_info", base, &[("error", error.as_str())], 1.0);
        }
        if let Some(not_after) = tls.leaf_not_after {
            out.push("smtp_tls_cert_expiry_timestamp_seconds", base, &[], not_after as f64);
            let info = [
                ("subject_cn", label_safe(&tls.subject_cn)),
                ("issuer_cn", label_safe(&tls.issuer_cn)),
                ("serial", label_safe(&tls.serial)),
                ("fingerprint_sha256", tls.fingerprint_sha256.clone()),
            ];
            let info: Vec<(&str, &str)> = info.iter().map(|(k, v)| (*k, v.as_str())).collect();
            out.push("smtp_tls_cert_info", base, &info, 1.0);
        }
        if let Some(earliest) = tls.chain_earliest_not_after {
            out.push("smtp_tls_chain_earliest_expiry_timestamp_seconds", base, &[], earliest as f64);
        }
    }
    if let Some(ok) = report.auth_success {
        out.push("smtp_auth_success", base, &[], bool_value(ok));
    }
    if let Some(code) = report.auth_reply_code {
        out.push("smtp_auth_reply_code", base, &[], f64::from(code));
    }
    for (session, caps) in [("plain", &report.ehlo), ("tls", &report.ehlo_tls)] {
        let Some(caps) = caps else { continue };
        if let Some(size) = caps.size_limit {
            out.push("smtp_ehlo_size_limit_bytes", base, &[("session", session)], size as f64);
        }
        if !ehlo_metrics {
            continue;
        }
        for ext in EHLO_EXTENSIONS {
            out.push(
                "smtp_ehlo_extension",
                base,
                &[("extension", ext), ("session", session)],
                bool_value(caps.has(ext)),
            );
        }
        for mech in AUTH_MECHANISMS {
            let offered = caps.auth_mechanisms.iter().any(|m| m == mech);
            out.push(
                "smtp_ehlo_auth_mechanism",
                base,
                &[("mechanism", mech), ("session", session)],
                bool_value(offered),
            );
        }
    }
}

/// The exporter's registry: probe series, self-metrics and process metrics.
pub struct Exporter {
    registry: Registry,
    pub store: Arc<Store>,
    /// `smtp_exporter_config_last_reload_successful`.
    pub reload_successful: IntGauge,
    /// `smtp_exporter_config_last_reload_success_timestamp_seconds`.
    pub reload_success_timestamp: prometheus::Gauge,
    /// How well the schedule keeps up, written by the scheduler.
    pub schedule: ScheduleMetrics,
}

/// Whether the probes keep up with their schedule: written by the scheduler, exported
/// with the exporter's own metrics.
#[derive(Clone)]
pub struct ScheduleMetrics {
    /// `smtp_exporter_probes_late_total`: probes that started more than
    /// `scheduler::LATE_AFTER` after their slot, waiting for a concurrency slot.
    pub late: IntCounter,
    /// `smtp_exporter_probe_slots_skipped_total`: slots passed over because the previous
    /// probe of the same spec was still running.
    pub skipped: IntCounter,
    /// `smtp_exporter_probe_start_delay_seconds`: from a probe's slot to its start.
    pub start_delay: Histogram,
    /// `smtp_exporter_probes_in_flight`.
    pub in_flight: IntGauge,
    /// `smtp_exporter_max_concurrency`.
    pub max_concurrency: IntGauge,
}

impl ScheduleMetrics {
    fn new(registry: &Registry) -> ScheduleMetrics {
        let metrics = ScheduleMetrics {
            late: IntCounter::new(
                "smtp_exporter_probes_late_total",
                "Scheduled probes that started more than 1 s after their slot because every concurrency slot (max_concurrency) was busy.",
            )
            .expect("late counter"),
            skipped: IntCounter::new(
                "smtp_exporter_probe_slots_skipped_total",
                "Schedule slots passed over because the previous probe of the same spec was still running.",
            )
            .expect("skipped counter"),
            start_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "smtp_exporter_probe_start_delay_seconds",
                    "Time from a scheduled probe's slot to its start (waiting for a concurrency slot).",
                )
                .buckets(vec![0.001, 0.01, 0.1, 1.0, 5.0, 15.0, 60.0]),
            )
            .expect("start delay histogram"),
            in_flight: IntGauge::new(
                "smtp_exporter_probes_in_flight",
                "Scheduled probes running now; at most smtp_exporter_max_concurrency.",
            )
            .expect("in-flight gauge"),
            max_concurrency: IntGauge::new(
                "smtp_exporter_max_concurrency",
                "The configured max_concurrency: scheduled probes that may run at once.",
            )
            .expect("max concurrency gauge"),
        };
        registry.register(Box::new(metrics.late.clone())).expect("register late counter");
        registry.register(Box::new(metrics.skipped.clone())).expect("register skipped counter");
        registry.register(Box::new(metrics.start_delay.clone())).expect("register start delay");
        registry.register(Box::new(metrics.in_flight.clone())).expect("register in-flight gauge");
        registry.register(Box::new(metrics.max_concurrency.clone())).expect("register max concurrency");
        metrics
    }
}

/// The `prometheus` crate's process collector, with `process_cpu_seconds_total` in
/// fractional seconds (from `getrusage`, in microseconds) instead of its whole seconds, so
/// that `rate()` of an exporter using a few percent of a core is not a staircase.
#[cfg(target_os = "linux")]
struct ProcessMetrics(prometheus::process_collector::ProcessCollector);

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.0.collect();
        let Some(seconds) = cpu_seconds() else { return families };
        for family in families.iter_mut().filter(|f| f.name() == "process_cpu_seconds_total") {
            for metric in family.mut_metric() {
                let mut counter = prometheus::proto::Counter::default();
                counter.set_value(seconds);
                metric.set_counter(counter);
            }
        }
        families
    }
}

/// User plus system CPU time of this process, in seconds.
#[cfg(target_os = "linux")]
fn cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

impl Exporter {
    pub fn new(store: Arc<Store>) -> Exporter {
        let registry = Registry::new();

        let build_info = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "smtp_exporter_build_info",
                "1 with the version of this exporter and the Rust compiler that built it.",
            ),
            &["version", "rustc_version"],
        )
        .expect("build_info descriptor");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("SMTP_EXPORTER_RUSTC_VERSION")])
            .set(1);
        registry.register(Box::new(build_info)).expect("register build_info");

        let reload_successful = IntGauge::new(
            "smtp_exporter_config_last_reload_successful",
            "1 if the last configuration load or reload succeeded, else 0.",
        )
        .expect("reload gauge");
        registry.register(Box::new(reload_successful.clone())).expect("register reload gauge");
        let reload_success_timestamp = prometheus::Gauge::new(
            "smtp_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load or reload.",
        )
        .expect("reload timestamp gauge");
        registry.register(Box::new(reload_success_timestamp.clone())).expect("register reload timestamp");

        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(ProcessMetrics(prometheus::process_collector::ProcessCollector::for_self())))
            .expect("register process collector");

        let schedule = ScheduleMetrics::new(&registry);
        Exporter { registry, store, reload_successful, reload_success_timestamp, schedule }
    }

    /// Marks a configuration (re)load as succeeded or failed.
    pub fn config_loaded(&self, ok: bool) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.reload_success_timestamp.set(now);
        }
    }

    /// Renders the text exposition format: the registry's families, then the probes'.
    pub fn render(&self) -> Vec<u8> {
        let rows = self.store.rows();
        let mut out = Vec::with_capacity(16 * 1024 + rows.len() * 8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        write_probe_families(&mut out, &rows, Source::Scheduled);
        drop(rows);
        release_free_memory();
        out
    }
}

/// The exposition of one on-demand probe (`/probe`): only that probe's series.
pub fn render_single(spec: &ProbeSpec, report: ProbeReport) -> Vec<u8> {
    let row = Row {
        key: spec.key(),
        report: Arc::new(report),
        ehlo_metrics: spec.module.ehlo_metrics,
        probes_total: 0,
        failures_total: Vec::new(),
    };
    let mut out = Vec::with_capacity(8 * 1024);
    write_probe_families(&mut out, &[row], Source::OnDemand);
    out
}

/// Hands freed heap back to the system. A scrape of a large fleet allocates tens of MiB
/// for a moment; without this, glibc keeps that memory mapped and RSS ratchets upwards.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
