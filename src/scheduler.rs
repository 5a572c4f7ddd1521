//! The scheduler: runs every probe spec on its own interval and records the reports.
//!
//! Second stop of the data flow, between `config` and `probe`. Each spec gets one task.
//! A task probes at once when its spec is new, then at `base + offset + k * interval`, where
//! `offset` is a stable hash of the spec's labels spread over the interval, so a thousand
//! targets do not connect in the same second and a reload does not reshuffle them. A task
//! awaits its probe before it sleeps again, so probes of one spec never overlap. A global
//! semaphore caps how many probes (and so connections) are open at once. When probes wait
//! for that cap, or a spec's probe runs past its next slot, the scheduler counts it
//! (`ScheduleMetrics`) and logs it once per episode, so that "the exporter cannot keep up"
//! is visible rather than silently making every result older.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::config::{Config, ProbeSpec, SpecKey};
use crate::metrics::{ScheduleMetrics, Store};
use crate::probe;

/// A probe that starts later than this after its slot counts as late.
pub const LATE_AFTER: Duration = Duration::from_secs(1);

/// How long the schedule must run without a late probe or a skipped slot before an
/// episode of lateness is over (and logged as such).
const CALM_AFTER: Duration = Duration::from_secs(60);

/// Runs and stops the per-spec tasks.
pub struct Scheduler {
    store: Arc<Store>,
    /// The common origin of every spec's schedule.
    base: Instant,
    running: HashMap<SpecKey, watch::Sender<bool>>,
    lateness: Arc<Lateness>,
}

impl Scheduler {
    pub fn new(store: Arc<Store>, metrics: ScheduleMetrics) -> Scheduler {
        let base = Instant::now();
        let lateness = Arc::new(Lateness {
            metrics,
            base,
            behind: AtomicBool::new(false),
            last_late_ms: AtomicU64::new(0),
        });
        Scheduler { store, base, running: HashMap::new(), lateness }
    }

    /// Makes the running tasks match `config`: removed specs stop (a probe in flight
    /// finishes, its report is dropped), new specs start with an immediate probe, and kept
    /// specs restart with the new settings on their unchanged schedule.
    pub fn apply(&mut self, config: &Config) {
        self.store.reconcile(&config.specs);
        for stop in self.running.values() {
            let _ = stop.send(true);
        }
        self.running.clear();
        let semaphore = Arc::new(Semaphore::new(config.max_concurrency));
        self.lateness.metrics.max_concurrency.set(i64::try_from(config.max_concurrency).unwrap_or(i64::MAX));
        for spec in &config.specs {
            let key = spec.key();
            let probe_now = !self.store.has_report(&key);
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = SpecTask {
                spec: spec.clone(),
                store: self.store.clone(),
                semaphore: semaphore.clone(),
                stop: stop_rx,
                base: self.base,
                lateness: self.lateness.clone(),
            };
            tokio::spawn(task.run(probe_now));
            self.running.insert(key, stop_tx);
        }
    }

    /// Stops every task.
    pub fn stop(&mut self) {
        for stop in self.running.values() {
            let _ = stop.send(true);
        }
        self.running.clear();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

struct SpecTask {
    spec: ProbeSpec,
    store: Arc<Store>,
    semaphore: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    base: Instant,
    lateness: Arc<Lateness>,
}

impl SpecTask {
    async fn run(mut self, probe_now: bool) {
        let key = self.spec.key();
        let offset = offset_for(&key, self.spec.interval);
        if probe_now && !self.probe_once(&key, Instant::now()).await {
            return;
        }
        let mut previous: Option<Instant> = None;
        loop {
            let next = next_slot(self.base, offset, self.spec.interval, Instant::now());
            if let Some(previous) = previous {
                let skipped = slots_between(previous, next, self.spec.interval);
                if skipped > 0 {
                    self.lateness.skipped(skipped);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.stop.changed() => return,
            }
            if !self.probe_once(&key, next).await {
                return;
            }
            previous = Some(next);
        }
    }

    /// Waits for a concurrency permit, probes, records. `slot` is when the probe was due.
    /// Returns false when told to stop.
    async fn probe_once(&mut self, key: &SpecKey, slot: Instant) -> bool {
        let permit = tokio::select! {
            permit = self.semaphore.clone().acquire_owned() => permit,
            _ = self.stop.changed() => return false,
        };
        let Ok(_permit) = permit else { return false };
        if *self.stop.borrow() {
            return false;
        }
        self.lateness.started(Instant::now().saturating_duration_since(slot));
        let metrics = &self.lateness.metrics;
        metrics.in_flight.inc();
        // Boxed: the probe future is several KiB, and an idle task should not carry room
        // for it between probes (10,000 idle specs would hold ~46 MiB for nothing).
        let report = Box::pin(probe::run(&self.spec)).await;
        metrics.in_flight.dec();
        log_report(key, &report, self.store.last_success(key));
        self.store.record(key, report);
        true
    }
}

/// Whether the schedule keeps up: counts late starts and skipped slots, and logs the start
/// and the end of each episode of lateness once, not once per probe.
struct Lateness {
    metrics: ScheduleMetrics,
    /// The origin of `last_late_ms`.
    base: Instant,
    /// True from the first late probe or skipped slot until `CALM_AFTER` without one.
    behind: AtomicBool,
    /// When the last late probe or skipped slot happened, in ms since `base`.
    last_late_ms: AtomicU64,
}

impl Lateness {
    /// A probe starts `delay` after its slot.
    fn started(&self, delay: Duration) {
        self.metrics.start_delay.observe(delay.as_secs_f64());
        if delay > LATE_AFTER {
            self.metrics.late.inc();
            self.fell_behind(format!("a probe started {:.1} s after its slot", delay.as_secs_f64()));
        } else {
            self.maybe_caught_up();
        }
    }

    /// A spec's probe ran past `count` of its slots.
    fn skipped(&self, count: u64) {
        self.metrics.skipped.inc_by(count);
        self.fell_behind(format!("a probe ran past {count} of its spec's slots"));
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fell_behind(&self, what: String) {
        self.last_late_ms.store(self.now_ms(), Ordering::Relaxed);
        if !self.behind.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                what = %what,
                in_flight = self.metrics.in_flight.get(),
                max_concurrency = self.metrics.max_concurrency.get(),
                "probes cannot keep up with their schedule: raise max_concurrency, or lower the modules' timeouts (counted in smtp_exporter_probes_late_total and smtp_exporter_probe_slots_skipped_total)"
            );
        }
    }

    fn maybe_caught_up(&self) {
        if !self.behind.load(Ordering::Relaxed) {
            return;
        }
        let calm_ms = u64::try_from(CALM_AFTER.as_millis()).unwrap_or(u64::MAX);
        if self.now_ms().saturating_sub(self.last_late_ms.load(Ordering::Relaxed)) >= calm_ms
            && self.behind.swap(false, Ordering::Relaxed)
        {
            tracing::info!("probes keep up with their schedule again");
        }
    }
}

/// How many slots of a schedule with `interval` lie strictly between two slots.
fn slots_between(earlier: Instant, later: Instant, interval: Duration) -> u64 {
    let gap = later.saturating_duration_since(earlier).as_nanos();
    let step = interval.as_nanos().max(1);
    u64::try_from((gap / step).saturating_sub(1)).unwrap_or(u64::MAX)
}

/// Logs a probe: transitions at warn/info level, every probe at debug level.
fn log_report(key: &SpecKey, report: &probe::ProbeReport, previous: Option<bool>) {
    // A first failure, a new failure, or a recovery is logged at warn/info level; the rest
    // only at debug level, so skip building the line when debug is off.
    let transition = match report.failure {
        Some(_) => previous != Some(false),
        None => previous == Some(false),
    };
    if !transition && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let phases: Vec<String> =
        report.phases.iter().map(|(p, d)| format!("{}={:.3}ms", p.as_str(), d.as_secs_f64() * 1e3)).collect();
    let phases = phases.join(",");
    match &report.failure {
        Some(f) if previous != Some(false) => tracing::warn!(
            target = %key.target, port = key.port, module = %key.module,
            phase = f.phase.as_str(), reason = f.reason.as_str(), detail = %f.detail,
            "probe failed"
        ),
        Some(f) => tracing::debug!(
            target = %key.target, port = key.port, module = %key.module,
            phase = f.phase.as_str(), reason = f.reason.as_str(), detail = %f.detail, phases = %phases,
            "probe failed again"
        ),
        None if previous == Some(false) => tracing::info!(
            target = %key.target, port = key.port, module = %key.module, phases = %phases,
            "probe recovered"
        ),
        None => tracing::debug!(
            target = %key.target, port = key.port, module = %key.module, phases = %phases,
            "probe succeeded"
        ),
    }
}

/// A stable pseudo-random offset in `[0, interval)` for a spec, from `SpecKey::stable_hash`:
/// the same across restarts, reloads and Rust versions.
pub fn offset_for(key: &SpecKey, interval: Duration) -> Duration {
    let hash = key.stable_hash();
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(hash) % nanos) as u64)
}

/// The first slot `base + offset + k * interval` strictly after `now`.
fn next_slot(base: Instant, offset: Duration, interval: Duration, now: Instant) -> Instant {
    let first = base + offset;
    if now < first {
        return first;
    }
    let since = now.duration_since(first).as_nanos();
    let step = interval.as_nanos().max(1);
    let k = since / step + 1;
    first + Duration::from_nanos((k * step) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(target: &str, port: u16) -> SpecKey {
        SpecKey { target: target.into(), port, module: "m".into() }
    }

    #[test]
    fn offsets_are_stable_and_spread() {
        let interval = Duration::from_secs(60);
        assert_eq!(offset_for(&key("a", 25), interval), offset_for(&key("a", 25), interval));
        // 1,000 targets over 60 one-second buckets: no bucket gets more than twice its share.
        let mut buckets = [0u32; 60];
        for i in 0..1000 {
            let off = offset_for(&key(&format!("mx{i}.example.test"), 25), interval);
            buckets[off.as_secs() as usize] += 1;
        }
        let max = *buckets.iter().max().unwrap();
        assert!(max <= 2 * 1000 / 60, "a one-second bucket holds {max} of 1000 starts: {buckets:?}");
    }

    #[test]
    fn slots_between_counts_the_missed_ones() {
        let t = Instant::now();
        let iv = Duration::from_secs(10);
        assert_eq!(slots_between(t, t + iv, iv), 0);
        assert_eq!(slots_between(t, t + iv * 3, iv), 2);
        assert_eq!(slots_between(t + iv, t, iv), 0);
    }

    #[test]
    fn next_slot_skips_missed_slots() {
        let base = Instant::now();
        let off = Duration::from_secs(5);
        let iv = Duration::from_secs(60);
        assert_eq!(next_slot(base, off, iv, base), base + off);
        assert_eq!(next_slot(base, off, iv, base + off), base + off + iv);
        assert_eq!(next_slot(base, off, iv, base + Duration::from_secs(200)), base + off + iv * 4);
    }
}
