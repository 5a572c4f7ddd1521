//! The scheduler: runs every probe spec on its own interval and records the reports.
//!
//! Second stop of the data flow, between `config` and `probe`. Each spec gets one task.
//! A task probes at once when its spec is new, then at `base + offset + k * interval`, where
//! `offset` is a stable hash of the spec's labels spread over the interval, so a thousand
//! targets do not connect in the same second and a reload does not reshuffle them. A task
//! awaits its probe before it sleeps again, so probes of one spec never overlap. A global
//! semaphore caps how many probes (and so connections) are open at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::config::{Config, ProbeSpec, SpecKey};
use crate::metrics::Store;
use crate::probe;

/// Runs and stops the per-spec tasks.
pub struct Scheduler {
    store: Arc<Store>,
    /// The common origin of every spec's schedule.
    base: Instant,
    running: HashMap<SpecKey, watch::Sender<bool>>,
}

impl Scheduler {
    pub fn new(store: Arc<Store>) -> Scheduler {
        Scheduler { store, base: Instant::now(), running: HashMap::new() }
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
}

impl SpecTask {
    async fn run(mut self, probe_now: bool) {
        let key = self.spec.key();
        let offset = offset_for(&key, self.spec.interval);
        if probe_now && !self.probe_once(&key).await {
            return;
        }
        loop {
            let next = next_slot(self.base, offset, self.spec.interval, Instant::now());
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.stop.changed() => return,
            }
            if !self.probe_once(&key).await {
                return;
            }
        }
    }

    /// Waits for a concurrency permit, probes, records. Returns false when told to stop.
    async fn probe_once(&mut self, key: &SpecKey) -> bool {
        let permit = tokio::select! {
            permit = self.semaphore.clone().acquire_owned() => permit,
            _ = self.stop.changed() => return false,
        };
        let Ok(_permit) = permit else { return false };
        if *self.stop.borrow() {
            return false;
        }
        // Boxed: the probe future is several KiB, and an idle task should not carry room
        // for it between probes (10,000 idle specs would hold ~46 MiB for nothing).
        let report = Box::pin(probe::run(&self.spec)).await;
        log_report(key, &report, self.store.last_success(key));
        self.store.record(key, report);
        true
    }
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
    fn next_slot_skips_missed_slots() {
        let base = Instant::now();
        let off = Duration::from_secs(5);
        let iv = Duration::from_secs(60);
        assert_eq!(next_slot(base, off, iv, base), base + off);
        assert_eq!(next_slot(base, off, iv, base + off), base + off + iv);
        assert_eq!(next_slot(base, off, iv, base + Duration::from_secs(200)), base + off + iv * 4);
    }
}
