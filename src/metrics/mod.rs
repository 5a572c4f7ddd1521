//! Metrics: the exposition, written on scrape from the store's latest reports and the
//! exporter's own metrics.
//!
//! Fourth stop of the data flow, after `store`. On scrape the store's rows are copied out
//! (the lock is held only to clone `Arc`s) and every probe family is written afresh by
//! `families`, so a spec removed by a reload leaves no stale series, and a phase that did
//! not run in the last probe has no series either. `/probe` writes its one report the same
//! way.
//!
//! Probe series are written straight into the text exposition rather than built as
//! `prometheus` crate protobuf structures: at 10,000 specs (740,000 series) building,
//! sorting and dropping those structures took 1.4 s per scrape and left 1 GiB of heap
//! behind (see BENCHMARKS.md). The `prometheus` registry serves the exporter's own and the
//! process metrics, which [`Exporter::render_chunks`] puts first. The exposition leaves in
//! chunks of a fixed size as it is written, so what a scrape allocates is bounded whatever
//! the fleet's size (before, the whole 77 MB of 10,000 specs, twice, and `malloc_trim` to
//! give it back).
//!
//! The folder: `families` writes the probe series of each spec, `domains` the series of
//! mail domains and expanded targets, `own` holds the scheduler's and the process's
//! metrics; [`Exporter`] here holds the registry and writes a scrape.

mod domains;
mod families;
mod own;

use own::ProcessMetrics;
pub use own::ScheduleMetrics;

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus::{Encoder, IntGauge, Registry, TextEncoder};

use families::Source;

use crate::config::ProbeSpec;
use crate::probe::ProbeReport;
use crate::store::{Row, Store};

/// The exporter's registry: probe series, self-metrics and process metrics.
pub struct Exporter {
    registry: Registry,
    pub store: Arc<Store>,
    /// What the domain walks found, for the domain series.
    pub resolutions: Arc<crate::domains::Resolutions>,
    /// `smtp_exporter_config_last_reload_successful`.
    pub reload_successful: IntGauge,
    /// `smtp_exporter_config_last_reload_success_timestamp_seconds`.
    pub reload_success_timestamp: prometheus::Gauge,
    /// How well the schedule keeps up, written by the scheduler.
    pub schedule: ScheduleMetrics,
    /// `smtp_exporter_history_bytes`, measured at each scrape.
    history_bytes: IntGauge,
}

impl Exporter {
    pub fn new(store: Arc<Store>, resolutions: Arc<crate::domains::Resolutions>) -> Exporter {
        let registry = Registry::new();

        let build_info = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "smtp_exporter_build_info",
                "1 with the version and git revision of this exporter, the date it was built, and the Rust compiler that built it.",
            ),
            &["version", "revision", "build_date", "rustc_version"],
        )
        .expect("build_info descriptor");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("SMTP_EXPORTER_REVISION"),
                env!("SMTP_EXPORTER_BUILD_DATE"),
                env!("SMTP_EXPORTER_RUSTC_VERSION"),
            ])
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
        let history_bytes = IntGauge::new(
            "smtp_exporter_history_bytes",
            "Bytes the specs' recent-result histories hold (history: in the configuration), at this scrape.",
        )
        .expect("history gauge");
        registry.register(Box::new(history_bytes.clone())).expect("register history gauge");
        Exporter {
            registry,
            store,
            resolutions,
            reload_successful,
            reload_success_timestamp,
            schedule,
            history_bytes,
        }
    }

    /// Adds a collector of the exporter's own (the web configuration's gauge).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry.register(collector).expect("a collector registered once");
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

    /// Renders the text exposition format, the registry's families then the probes', in
    /// chunks of about `chunk` bytes handed to `flush` (which takes the bytes and says
    /// whether to go on); the last, shorter chunk too.
    pub fn render_chunks(&self, chunk: usize, flush: &mut dyn FnMut(&mut Vec<u8>) -> bool) {
        self.history_bytes.set(i64::try_from(self.store.history_heap_bytes()).unwrap_or(i64::MAX));
        let rows = self.store.rows();
        let mut out = Vec::with_capacity(chunk.saturating_add(chunk / 4).min(4 << 20));
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        if families::write(&mut out, &rows, Source::Scheduled, chunk, flush) {
            domains::write_resolver(&mut out, self.resolutions.capability().as_deref());
            domains::write(&mut out, &self.resolutions.snapshot(), &rows);
            if !out.is_empty() {
                flush(&mut out);
            }
        }
    }

    /// The whole exposition in one buffer.
    #[cfg(test)]
    fn render(&self) -> Vec<u8> {
        let mut all = Vec::new();
        self.render_chunks(usize::MAX, &mut |chunk| {
            all.append(chunk);
            true
        });
        all
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
    families::write(&mut out, &[row], Source::OnDemand, usize::MAX, &mut |_| true);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Failure, Phase, Reason};

    fn exporter_with_reports() -> Exporter {
        let mut yaml = String::from("modules:\n  m: { tls: none }\ntargets:\n");
        for i in 0..50 {
            yaml.push_str(&format!(
                "  - {{ name: \"mx{i}\\\"q\", host: 127.0.0.1, ports: [{{ port: 25, module: m }}] }}\n"
            ));
        }
        let config = crate::config::parse(&yaml, "t").unwrap();
        let store = Arc::new(Store::new());
        store.reconcile(&config.schedule);
        for (i, scheduled) in config.schedule.iter().enumerate() {
            let mut report = ProbeReport::new();
            report.phases.push((Phase::Connect, std::time::Duration::from_micros(250)));
            if i % 2 == 0 {
                report.failure =
                    Some(Failure { phase: Phase::Connect, reason: Reason::Refused, detail: String::new() });
            }
            store.record(&scheduled.spec.key(), report);
        }
        Exporter::new(store, Default::default())
    }

    fn probe_part(text: &[u8]) -> String {
        let text = String::from_utf8(text.to_vec()).unwrap();
        text[text.find("# HELP smtp_probe_success").unwrap()..].to_owned()
    }

    /// The exposition streamed in small chunks is byte for byte the one written whole, and
    /// a reader that goes away stops the writing.
    #[test]
    fn chunks_make_up_the_whole_exposition() {
        let exporter = exporter_with_reports();
        let whole = exporter.render();
        let mut chunks = Vec::new();
        exporter.render_chunks(512, &mut |out| {
            chunks.push(std::mem::take(out));
            true
        });
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        // The first chunk also holds the registry's families; the others end after the row
        // that filled them.
        assert!(
            chunks[1..].iter().all(|c| c.len() < 512 + 1024),
            "a chunk overran its size by more than a row"
        );
        assert_eq!(probe_part(&chunks.concat()), probe_part(&whole));
        assert!(probe_part(&whole).contains(
            "smtp_probe_failures_total{target=\"mx0\\\"q\",port=\"25\",module=\"m\",reason=\"refused\"} 1\n"
        ));

        let mut calls = 0;
        exporter.render_chunks(512, &mut |out| {
            calls += 1;
            out.clear();
            false
        });
        assert_eq!(calls, 1, "writing went on after the reader left");
    }
}
