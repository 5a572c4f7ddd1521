//! The scheduler's own metrics ([`ScheduleMetrics`]: probes in flight, late starts,
//! skipped slots, starved probes) and the process metrics, registered in the exporter's
//! `prometheus` registry by `Exporter` (the folder's index).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

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
    /// `smtp_exporter_probes_failed_locally_total`: probes the exporter could not run for
    /// want of its own resources, not recorded as the target's result.
    pub local_failures: IntCounter,
}

impl ScheduleMetrics {
    pub(super) fn new(registry: &Registry) -> ScheduleMetrics {
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
            local_failures: IntCounter::new(
                "smtp_exporter_probes_failed_locally_total",
                "Scheduled probes that failed on the exporter's side (out of file descriptors or memory); they are not recorded as the target's result.",
            )
            .expect("local failures counter"),
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
        registry.register(Box::new(metrics.local_failures.clone())).expect("register local failures");
        metrics
    }
}

/// The `prometheus` crate's process collector, with `process_cpu_seconds_total` in
/// fractional seconds (from `getrusage`, in microseconds) instead of its whole seconds, so
/// that `rate()` of an exporter using a few percent of a core is not a staircase.
#[cfg(target_os = "linux")]
pub(super) struct ProcessMetrics(pub(super) prometheus::process_collector::ProcessCollector);

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.0.collect();
        let Some(seconds) = crate::sys::cpu_seconds() else { return families };
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
