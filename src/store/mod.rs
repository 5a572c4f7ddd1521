//! The store: the latest report and the counters of every configured spec.
//!
//! Between the scheduler and the readers of the data flow. The scheduler hands each
//! finished report to [`Store::record`]; nothing is computed then. `metrics` renders the
//! exposition from [`Store::rows`] on scrape, the status page and readiness read
//! [`Store::snapshot`]. Locks are held only to copy or swap an `Arc`, and a reload keeps
//! exactly the configured specs ([`Store::reconcile`]), so a removed spec leaves no stale
//! series. Each spec also keeps its recent results ([`history`]) for the status page's
//! strip and `/history`, and its last failing report with its transcript.

pub mod history;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::HistoryBounds;
pub use history::{Entry, History};

use crate::config::{Scheduled, SpecKey};
use crate::probe::{ProbeReport, Reason};

/// What the store keeps per spec.
#[derive(Default)]
struct SpecRecord {
    /// The module's `ehlo_metrics` setting, refreshed on every reconcile.
    ehlo_metrics: crate::config::EhloMetrics,
    last: Option<Arc<ProbeReport>>,
    /// The last failing report, kept with its transcript until the next failure.
    last_failure: Option<Arc<ProbeReport>>,
    probes_total: u64,
    failures_total: BTreeMap<Reason, u64>,
    history: History,
}

/// The latest report and counters of every configured spec. Shared by the scheduler
/// (writer) and the renderers (readers).
#[derive(Default)]
pub struct Store {
    specs: RwLock<BTreeMap<SpecKey, SpecRecord>>,
    /// How much history each spec keeps (`history:`); set on every (re)load.
    bounds: RwLock<HistoryBounds>,
}

/// One spec's data for a scrape: what `metrics` writes.
pub struct Row {
    pub key: SpecKey,
    pub report: Arc<ProbeReport>,
    pub ehlo_metrics: crate::config::EhloMetrics,
    pub probes_total: u64,
    pub failures_total: Vec<(Reason, u64)>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Keeps exactly the configured specs: new ones start empty, removed ones lose their
    /// record and series, kept ones keep their counters and take the new settings.
    pub fn reconcile(&self, configured: &[Arc<Scheduled>]) {
        let wanted: BTreeMap<SpecKey, crate::config::EhloMetrics> =
            configured.iter().map(|s| (s.spec.key(), s.spec.module.ehlo_metrics)).collect();
        let mut specs = self.specs.write().expect("store lock");
        specs.retain(|k, _| wanted.contains_key(k));
        for (key, ehlo_metrics) in wanted {
            specs.entry(key).or_default().ehlo_metrics = ehlo_metrics;
        }
    }

    /// Records a finished probe. A report for a spec that is no longer configured (its
    /// probe was in flight during a reload) is dropped. Only a failing report keeps its
    /// transcript, until the spec's next failure: the memory a transcript takes (at most
    /// `transcript::MAX_BYTES`) is spent on the specs that fail.
    pub fn record(&self, key: &SpecKey, mut report: ProbeReport) {
        if report.success() {
            report.transcript = None;
        }
        let entry = Entry::of(&report);
        let report = Arc::new(report);
        let bounds = *self.bounds.read().expect("history bounds lock");
        let mut specs = self.specs.write().expect("store lock");
        if let Some(record) = specs.get_mut(key) {
            record.probes_total += 1;
            record.history.push(entry, bounds);
            if let Some(failure) = &report.failure {
                *record.failures_total.entry(failure.reason).or_default() += 1;
                record.last_failure = Some(report.clone());
            }
            record.last = Some(report);
        }
    }

    /// Sets how much history each spec keeps from now on.
    pub fn set_history_bounds(&self, bounds: HistoryBounds) {
        *self.bounds.write().expect("history bounds lock") = bounds;
    }

    pub fn history_bounds(&self) -> HistoryBounds {
        *self.bounds.read().expect("history bounds lock")
    }

    /// Every configured spec's history, in label order.
    pub fn histories(&self) -> Vec<(SpecKey, History)> {
        let specs = self.specs.read().expect("store lock");
        specs.iter().map(|(k, s)| (k.clone(), s.history.clone())).collect()
    }

    /// The bytes the histories take, for the bench.
    pub fn history_heap_bytes(&self) -> usize {
        self.specs.read().expect("store lock").values().map(|s| s.history.heap_bytes()).sum()
    }

    /// The last failing report of `key`, with its transcript, if it ever failed.
    pub fn last_failure(&self, key: &SpecKey) -> Option<Arc<ProbeReport>> {
        self.specs.read().expect("store lock").get(key).and_then(|r| r.last_failure.clone())
    }

    /// True once every configured spec has completed at least one probe.
    pub fn all_probed(&self) -> bool {
        self.specs.read().expect("store lock").values().all(|s| s.last.is_some())
    }

    /// What a scrape needs, copied out under the lock: the specs that have a report, in
    /// label order, with their counters.
    pub fn rows(&self) -> Vec<Row> {
        let specs = self.specs.read().expect("store lock");
        specs
            .iter()
            .filter_map(|(key, record)| {
                record.last.clone().map(|report| Row {
                    key: key.clone(),
                    report,
                    ehlo_metrics: record.ehlo_metrics,
                    probes_total: record.probes_total,
                    failures_total: record.failures_total.iter().map(|(r, n)| (*r, *n)).collect(),
                })
            })
            .collect()
    }

    /// Every configured spec with its latest report (`None` before the first probe), in
    /// label order.
    pub fn snapshot(&self) -> Vec<(SpecKey, Option<Arc<ProbeReport>>)> {
        let specs = self.specs.read().expect("store lock");
        specs.iter().map(|(k, s)| (k.clone(), s.last.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Failure, Phase};

    /// A reload keeps the counters of the specs it keeps, and drops those it removes.
    #[test]
    fn counters_survive_a_reload_for_kept_specs() {
        let yaml = |ports: &str| {
            format!(
                "modules: {{ m: {{ tls: none }} }}\ntargets:\n  - {{ host: 127.0.0.1, ports: [{ports}] }}\n"
            )
        };
        let both =
            crate::config::parse(&yaml("{ port: 25, module: m }, { port: 26, module: m }"), "t").unwrap();
        let store = Store::new();
        store.reconcile(&both.schedule);
        let (kept, removed) = (both.schedule[0].spec.key(), both.schedule[1].spec.key());
        for _ in 0..3 {
            let mut report = ProbeReport::new();
            report.failure =
                Some(Failure { phase: Phase::Connect, reason: Reason::Refused, detail: String::new() });
            store.record(&kept, report.clone());
            store.record(&removed, report);
        }
        let one = crate::config::parse(&yaml("{ port: 25, module: m }"), "t").unwrap();
        store.reconcile(&one.schedule);
        let rows = store.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, kept);
        assert_eq!((rows[0].probes_total, rows[0].failures_total.clone()), (3, vec![(Reason::Refused, 3)]));
    }
}
