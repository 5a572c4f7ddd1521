//! The scheduler: runs every probe spec on its own interval and records the reports.
//!
//! Second stop of the data flow, between `config` and `probe`. Each spec gets one task,
//! which lives as long as its spec (its key: target, port, module) stays in the
//! configuration: a reload hands kept tasks their new settings and neither restarts nor
//! re-probes them; new specs are probed at once; removed ones stop, a probe in flight with
//! them. A task probes at `base + offset + k * interval`, where `offset` is a stable hash
//! of the spec's labels spread over the interval, so a thousand targets do not connect in
//! the same second and a reload does not reshuffle them. A task awaits its probe before
//! it sleeps again, so probes of one spec never overlap. One concurrency limit, kept and
//! resized across reloads, caps how many probes (and so connections) are open at once.
//! When probes wait for that cap, or a spec's probe runs past its next slot, the scheduler
//! counts it (`ScheduleMetrics`) and logs it once per episode, so that "the exporter cannot
//! keep up" is visible rather than silently making every result older. Tasks are tracked,
//! so that shutdown waits for them to end.
//!
//! A task costs little while it sleeps, since a fleet is mostly sleeping tasks: it shares
//! its spec with the configuration (an `Arc`), finds its current settings in a small cell
//! the scheduler writes, and learns of a reload from one channel that every task listens
//! to, rather than from a channel and a cancellation token of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Scheduled, SpecKey};
use crate::metrics::ScheduleMetrics;
use crate::probe;
use crate::store::Store;

/// A probe that starts later than this after its slot counts as late.
pub const LATE_AFTER: Duration = Duration::from_secs(1);

/// How long the schedule must run without a late probe or a skipped slot before an
/// episode of lateness is over (and logged as such).
const CALM_AFTER: Duration = Duration::from_secs(60);

/// How long shutdown waits for the tasks to end (they stop at once when cancelled; this
/// only bounds a task stuck in a blocking call).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a delivery probe in flight at shutdown may go on to clean up its message.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// Runs, updates and stops the per-spec tasks.
pub struct Scheduler {
    store: Arc<Store>,
    /// The common origin of every spec's schedule.
    base: Instant,
    /// The concurrency limit shared by every task, across reloads.
    limit: Limit,
    lateness: Arc<Lateness>,
    tasks: HashMap<SpecKey, Arc<Settings>>,
    /// Bumped after a reload has written the tasks' settings: every task looks at its own.
    /// Dropped with the scheduler, which ends every task (the exporter's future dropped
    /// without `stop`).
    reloaded: watch::Sender<()>,
    tracker: TaskTracker,
    /// Cancelled on shutdown; every task holds a clone.
    shutdown: CancellationToken,
}

/// One task's current settings, written by the scheduler on reload.
struct Settings {
    /// `None` once the spec is removed: the task ends (and the probe it is running).
    spec: Mutex<Option<Arc<Scheduled>>>,
}

impl Settings {
    fn current(&self) -> Option<Arc<Scheduled>> {
        self.spec.lock().expect("task settings lock").clone()
    }

    fn set(&self, spec: Option<Arc<Scheduled>>) {
        *self.spec.lock().expect("task settings lock") = spec;
    }
}

impl Scheduler {
    pub fn new(store: Arc<Store>, metrics: ScheduleMetrics) -> Scheduler {
        let base = Instant::now();
        let lateness = Arc::new(Lateness::new(metrics, base));
        Scheduler {
            store,
            base,
            limit: Limit::new(),
            lateness,
            tasks: HashMap::new(),
            reloaded: watch::Sender::new(()),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The `max_concurrency` permits, which on-demand probes take too.
    pub fn limit(&self) -> Arc<Semaphore> {
        self.limit.semaphore.clone()
    }

    /// Makes the running tasks match `schedule` (the configured specs and those the
    /// domain walks made): removed specs stop (a probe in flight with them), new specs
    /// start with an immediate probe, and kept specs take the new settings on their
    /// unchanged schedule.
    pub fn apply(&mut self, schedule: &[Arc<Scheduled>], max_concurrency: usize) {
        self.store.reconcile(schedule);
        self.limit.resize(max_concurrency, &self.tracker);
        self.lateness.metrics.max_concurrency.set(i64::try_from(max_concurrency).unwrap_or(i64::MAX));
        let mut wanted: HashMap<SpecKey, Arc<Scheduled>> =
            schedule.iter().map(|s| (s.spec.key(), s.clone())).collect();
        self.tasks.retain(|key, settings| {
            let spec = wanted.remove(key);
            let kept = spec.is_some();
            settings.set(spec);
            kept
        });
        for (key, scheduled) in wanted {
            let settings = Arc::new(Settings { spec: Mutex::new(Some(scheduled.clone())) });
            let task = SpecTask {
                key: key.clone(),
                spec: scheduled,
                settings: settings.clone(),
                reloaded: self.reloaded.subscribe(),
                store: self.store.clone(),
                limit: self.limit.semaphore.clone(),
                shutdown: self.shutdown.clone(),
                base: self.base,
                lateness: self.lateness.clone(),
                last_success: None,
            };
            self.tracker.spawn(task.run());
            self.tasks.insert(key, settings);
        }
        self.reloaded.send_replace(());
    }

    /// Stops every task and waits (bounded) until they have ended.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        self.tasks.clear();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT + DELIVERY_GRACE, self.tracker.wait()).await.is_err() {
            tracing::warn!(tasks = self.tracker.len(), "probe tasks still running at shutdown");
        }
    }
}

/// The concurrency limit: one semaphore for the exporter's whole life, resized when a
/// reload changes `max_concurrency`, so that probes running across a reload keep counting.
struct Limit {
    semaphore: Arc<Semaphore>,
    size: usize,
}

impl Limit {
    fn new() -> Limit {
        Limit { semaphore: Arc::new(Semaphore::new(0)), size: 0 }
    }

    /// Grows by adding permits; shrinks by taking permits away: the free ones now, the
    /// rest as the probes holding them end (a tracked task waits for them).
    fn resize(&mut self, size: usize, tracker: &TaskTracker) {
        if size > self.size {
            self.semaphore.add_permits(size - self.size);
        } else if size < self.size {
            let shrink = self.size - size;
            let owed = shrink - self.semaphore.forget_permits(shrink);
            if owed > 0 {
                let semaphore = self.semaphore.clone();
                tracker.spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many(u32::try_from(owed).unwrap_or(u32::MAX)).await
                    {
                        permits.forget();
                    }
                });
            }
        }
        self.size = size;
    }
}

/// One spec's task: sleeps until its slot, probes, records, and so on until its spec is
/// removed or the exporter stops.
struct SpecTask {
    key: SpecKey,
    /// The settings in use; taken from `settings` after each reload.
    spec: Arc<Scheduled>,
    settings: Arc<Settings>,
    reloaded: watch::Receiver<()>,
    store: Arc<Store>,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
    base: Instant,
    lateness: Arc<Lateness>,
    /// Whether this task's last probe succeeded, for logging transitions.
    last_success: Option<bool>,
}

impl SpecTask {
    async fn run(mut self) {
        // A new spec is probed at once, then on its slots.
        let mut slot = Instant::now();
        loop {
            // A reload during the probe may have brought new settings, or removed the spec.
            if !self.probe_and_record(slot).await || !self.take_settings() {
                return;
            }
            let probed = slot;
            slot = self.next_slot();
            let skipped = slots_between(probed, slot, self.spec.interval);
            if skipped > 0 {
                self.lateness.skipped(skipped);
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(slot) => break,
                    // New settings: the interval may have changed, so reckon the slot again.
                    changed = self.reloaded.changed() => {
                        if changed.is_err() || !self.take_settings() {
                            return;
                        }
                        slot = self.next_slot();
                    }
                    _ = self.shutdown.cancelled() => return,
                }
            }
        }
    }

    fn next_slot(&self) -> Instant {
        let interval = self.spec.interval;
        next_slot(self.base, offset_for(&self.key, interval), interval, Instant::now())
    }

    /// Takes the settings a reload wrote; false when the spec was removed (or the
    /// scheduler is gone).
    fn take_settings(&mut self) -> bool {
        match self.settings.current() {
            Some(spec) => {
                self.spec = spec;
                true
            }
            None => false,
        }
    }

    /// Resolves when this task should stop: the exporter stops, or a reload removed the
    /// spec. A reload that keeps it is noted and waited past.
    async fn stopped(shutdown: &CancellationToken, reloaded: &mut watch::Receiver<()>, settings: &Settings) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = reloaded.changed() => {
                    if changed.is_err() || settings.current().is_none() {
                        return;
                    }
                }
            }
        }
    }

    /// Waits for a concurrency permit, probes with the current settings, records. `slot`
    /// is when the probe was due. Returns false when cancelled.
    async fn probe_and_record(&mut self, slot: Instant) -> bool {
        let permit = tokio::select! {
            permit = self.limit.clone().acquire_owned() => permit,
            _ = Self::stopped(&self.shutdown, &mut self.reloaded, &self.settings) => return false,
        };
        let Ok(_permit) = permit else { return false };
        self.lateness.started(Instant::now().saturating_duration_since(slot));
        // A reload while waiting for the permit may have brought new settings.
        if !self.take_settings() {
            return false;
        }
        let scheduled = self.spec.clone();
        let metrics = &self.lateness.metrics;
        metrics.in_flight.inc();
        // Boxed: the probe future is several KiB, and an idle task should not carry room
        // for it between probes (10,000 idle specs would hold ~46 MiB for nothing).
        let mut probe = Box::pin(probe::run_recorded(&scheduled.spec));
        let report = tokio::select! {
            report = &mut probe => Some(report),
            _ = Self::stopped(&self.shutdown, &mut self.reloaded, &self.settings) => {
                // At shutdown, a delivery probe may have a message in the mailbox: it gets
                // a bounded grace to find and delete it (else the next sweep does).
                if self.shutdown.is_cancelled() && scheduled.spec.module.delivery.is_some() {
                    tokio::time::timeout(DELIVERY_GRACE, probe).await.ok()
                } else {
                    None
                }
            }
        };
        metrics.in_flight.dec();
        let Some(report) = report else { return false };
        if let Some(failure) =
            report.failure.as_ref().filter(|f| f.reason == crate::probe::Reason::LocalResources)
        {
            // The exporter's own trouble says nothing about the target: keep its last result.
            self.lateness.starved(&failure.detail);
            return true;
        }
        self.lateness.fed();
        log_report(&self.key, &report, self.last_success);
        self.last_success = Some(report.success());
        self.store.record(&self.key, report);
        true
    }
}

/// Whether the schedule keeps up: counts late starts, skipped slots and probes the exporter
/// could not run for want of resources, and logs the start and the end of each episode
/// once, not once per probe.
struct Lateness {
    metrics: ScheduleMetrics,
    behind: Episode,
    starved: Episode,
}

/// A condition that starts with its first occurrence and ends after `CALM_AFTER` without
/// one.
struct Episode {
    /// The origin of `last_ms`.
    base: Instant,
    active: AtomicBool,
    /// When it last occurred, in ms since `base`.
    last_ms: AtomicU64,
}

impl Episode {
    fn new(base: Instant) -> Episode {
        Episode { base, active: AtomicBool::new(false), last_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// It occurred; true when that starts an episode.
    fn occurred(&self) -> bool {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        !self.active.swap(true, Ordering::Relaxed)
    }

    /// It did not occur; true when that ends an episode.
    fn calm(&self) -> bool {
        if !self.active.load(Ordering::Relaxed) {
            return false;
        }
        let calm_ms = u64::try_from(CALM_AFTER.as_millis()).unwrap_or(u64::MAX);
        self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)) >= calm_ms
            && self.active.swap(false, Ordering::Relaxed)
    }
}

impl Lateness {
    fn new(metrics: ScheduleMetrics, base: Instant) -> Lateness {
        Lateness { metrics, behind: Episode::new(base), starved: Episode::new(base) }
    }

    /// A probe starts `delay` after its slot.
    fn started(&self, delay: Duration) {
        self.metrics.start_delay.observe(delay.as_secs_f64());
        if delay > LATE_AFTER {
            self.metrics.late.inc();
            self.fell_behind(format!("a probe started {:.1} s after its slot", delay.as_secs_f64()));
        } else if self.behind.calm() {
            tracing::info!("probes keep up with their schedule again");
        }
    }

    /// A spec's probe ran past `count` of its slots.
    fn skipped(&self, count: u64) {
        self.metrics.skipped.inc_by(count);
        self.fell_behind(format!("a probe ran past {count} of its spec's slots"));
    }

    fn fell_behind(&self, what: String) {
        if self.behind.occurred() {
            tracing::warn!(
                what = %what,
                in_flight = self.metrics.in_flight.get(),
                max_concurrency = self.metrics.max_concurrency.get(),
                "probes cannot keep up with their schedule: raise max_concurrency, or lower the modules' timeouts (counted in smtp_exporter_probes_late_total and smtp_exporter_probe_slots_skipped_total)"
            );
        }
    }

    /// A probe could not run for want of the exporter's own resources.
    fn starved(&self, detail: &str) {
        self.metrics.local_failures.inc();
        if self.starved.occurred() {
            tracing::error!(
                detail = %detail,
                in_flight = self.metrics.in_flight.get(),
                "the exporter is out of resources (file descriptors or memory); probes that fail so are not recorded as the targets' results: raise the open-file limit or lower max_concurrency (counted in smtp_exporter_probes_failed_locally_total)"
            );
        }
    }

    /// A probe ran on the exporter's side as it should.
    fn fed(&self) {
        if self.starved.calm() {
            tracing::info!("the exporter has the resources to probe again");
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
    // A delivery probe's message, for finding it in the MTA's log.
    if let Some(d) = &report.delivery {
        tracing::debug!(
            target = %key.target, port = key.port, module = %key.module, token = %d.token,
            queue_id = d.queue_id.as_deref().unwrap_or("none"),
            folder = d.folder.map_or("not found", |f| f.as_str()),
            "delivery probe message"
        );
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
        SpecKey { target: target.into(), port, module: "m".into(), via: None }
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

    /// Issue 17: shrinking `max_concurrency` takes the free permits at once and the held
    /// ones as their probes end, so the limit ends exactly at the new size; growing adds.
    #[tokio::test]
    async fn the_limit_shrinks_as_held_permits_come_back() {
        let tracker = TaskTracker::new();
        let mut limit = Limit::new();
        limit.resize(4, &tracker);
        assert_eq!(limit.semaphore.available_permits(), 4);
        let held = limit.semaphore.clone().acquire_many_owned(3).await.unwrap();
        limit.resize(1, &tracker);
        assert_eq!(limit.semaphore.available_permits(), 0, "the free permit is taken at once");
        drop(held);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the owed permits come back");
        assert_eq!(limit.semaphore.available_permits(), 1, "two of the three returned are owed");
        let tracker = TaskTracker::new();
        limit.resize(3, &tracker);
        assert_eq!(limit.semaphore.available_permits(), 3);
        limit.resize(3, &tracker);
        assert_eq!(limit.semaphore.available_permits(), 3);
        limit.resize(0, &tracker);
        assert_eq!((limit.semaphore.available_permits(), tracker.len()), (0, 0), "nothing owed");
    }

    /// A listener that counts the connections made to it (each is closed at once).
    async fn counting_listener() -> (u16, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        (port, count)
    }

    fn schedule(ports: &[(&str, u16)]) -> Vec<Arc<Scheduled>> {
        schedule_with(ports, "500ms")
    }

    fn schedule_with(ports: &[(&str, u16)], timeout: &str) -> Vec<Arc<Scheduled>> {
        let mut yaml =
            format!("interval: 1s\nmodules:\n  m: {{ tls: none, timeout: {timeout} }}\ntargets:\n");
        for (name, port) in ports {
            yaml.push_str(&format!(
                "  - {{ name: {name}, host: 127.0.0.1, ports: [{{ port: {port}, module: m }}] }}\n"
            ));
        }
        crate::config::parse(&yaml, "t").unwrap().schedule
    }

    fn scheduler() -> Scheduler {
        scheduler_and_metrics().0
    }

    fn scheduler_and_metrics() -> (Scheduler, ScheduleMetrics) {
        let store = Arc::new(Store::new());
        let exporter = crate::metrics::Exporter::new(store.clone(), Default::default());
        (Scheduler::new(store, exporter.schedule.clone()), exporter.schedule.clone())
    }

    async fn at_least(count: &AtomicU64, n: u64) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while count.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("fewer than {n} probes in 5 s"));
    }

    /// Issue 17: a spec removed by a reload stops probing while a kept one goes on, and a
    /// stopped scheduler probes nothing more.
    #[tokio::test]
    async fn removed_specs_and_a_stopped_scheduler_probe_no_more() {
        let ((a_port, a), (b_port, b)) = (counting_listener().await, counting_listener().await);
        let mut scheduler = scheduler();
        scheduler.apply(&schedule(&[("a", a_port), ("b", b_port)]), 8);
        at_least(&a, 1).await;
        at_least(&b, 1).await;
        scheduler.apply(&schedule(&[("b", b_port)]), 8);
        let (a_then, b_then) = (a.load(Ordering::SeqCst), b.load(Ordering::SeqCst));
        at_least(&b, b_then + 2).await;
        assert_eq!(a.load(Ordering::SeqCst), a_then, "the removed spec was probed again");
        scheduler.stop().await;
        let b_then = b.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(b.load(Ordering::SeqCst), b_then, "probed after stop");
    }

    /// Issue 17: dropping the scheduler without `stop` (the exporter's future dropped)
    /// ends its tasks too: their `reloaded` channel closes.
    #[tokio::test]
    async fn a_dropped_scheduler_probes_no_more() {
        let (port, count) = counting_listener().await;
        let mut scheduler = scheduler();
        scheduler.apply(&schedule(&[("a", port)]), 8);
        at_least(&count, 1).await;
        drop(scheduler);
        let then = count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(count.load(Ordering::SeqCst), then, "probed after the scheduler was dropped");
    }

    /// Issue 17: a probe that runs past its spec's next slot (a silent server, a timeout
    /// as long as the interval) is counted in `smtp_exporter_probe_slots_skipped_total`.
    #[tokio::test]
    async fn a_probe_that_runs_past_its_next_slot_is_counted_as_skipped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(stream);
                });
            }
        });
        let (mut scheduler, metrics) = scheduler_and_metrics();
        scheduler.apply(&schedule_with(&[("silent", port)], "1s"), 8);
        let counted = tokio::time::timeout(Duration::from_secs(8), async {
            while metrics.skipped.get() == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        counted.await.expect("no skipped slot counted in 8 s");
        scheduler.stop().await;
    }

    /// Issue 17: an episode of lateness starts with its first occurrence and ends only
    /// after a calm minute, once.
    #[tokio::test(start_paused = true)]
    async fn an_episode_ends_after_a_calm_minute() {
        let episode = Episode::new(Instant::now());
        assert!(!episode.calm(), "nothing to end");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(episode.occurred(), "the first occurrence starts an episode");
        assert!(!episode.occurred(), "a second one is the same episode");
        tokio::time::advance(CALM_AFTER - Duration::from_secs(1)).await;
        assert!(!episode.calm(), "not yet a calm minute");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(episode.calm(), "a calm minute ends it");
        assert!(!episode.calm(), "it ends once");
        assert!(episode.occurred(), "the next occurrence starts a new one");
    }

    /// Issue 17: a probe is late only when it starts more than `LATE_AFTER` after its
    /// slot; at exactly that it is on time.
    #[tokio::test]
    async fn late_means_more_than_late_after() {
        let (_, metrics) = scheduler_and_metrics();
        let lateness = Lateness::new(metrics.clone(), Instant::now());
        lateness.started(LATE_AFTER);
        assert_eq!(metrics.late.get(), 0);
        lateness.started(LATE_AFTER + Duration::from_millis(1));
        assert_eq!(metrics.late.get(), 1);
    }

    /// Issue 17: starved probes start an episode that a calm minute of probes that ran
    /// ends (`fed`).
    #[tokio::test(start_paused = true)]
    async fn probes_that_run_again_end_a_starved_episode() {
        let (_, metrics) = scheduler_and_metrics();
        let lateness = Lateness::new(metrics.clone(), Instant::now());
        lateness.starved("EMFILE");
        assert_eq!(metrics.local_failures.get(), 1);
        assert!(lateness.starved.active.load(Ordering::Relaxed));
        tokio::time::advance(CALM_AFTER + Duration::from_secs(1)).await;
        lateness.fed();
        assert!(!lateness.starved.active.load(Ordering::Relaxed), "fed after a calm minute ends it");
    }

    /// What `log_report` writes at `level`, for a report that failed or not, after a
    /// previous result.
    fn logged(level: tracing::Level, failed: bool, previous: Option<bool>) -> String {
        let captured = crate::test_support::Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(captured.writer())
            .finish();
        let mut report = probe::ProbeReport::new();
        if failed {
            report.failure = Some(crate::probe::Failure {
                phase: crate::probe::Phase::Banner,
                reason: crate::probe::Reason::Timeout,
                detail: "no greeting".into(),
            });
        }
        tracing::subscriber::with_default(subscriber, || log_report(&key("mx", 25), &report, previous));
        captured.text()
    }

    /// Issue 17: a first failure, a new failure after a success and a recovery are logged
    /// at warn and info level; a repeated result only at debug level.
    #[test]
    fn only_transitions_are_logged_above_debug() {
        use tracing::Level;
        let says = |level, failed, previous, level_word: &str, message: &str| {
            let text = logged(level, failed, previous);
            assert!(
                text.contains(level_word) && text.contains(message),
                "{failed} after {previous:?} at {level}: wanted {level_word} {message:?}, got {text:?}"
            );
        };
        says(Level::INFO, true, None, "WARN", "probe failed");
        says(Level::INFO, true, Some(true), "WARN", "probe failed");
        says(Level::INFO, false, Some(false), "INFO", "probe recovered");
        for (failed, previous) in [(true, Some(false)), (false, Some(true)), (false, None)] {
            assert_eq!(logged(Level::INFO, failed, previous), "", "{failed} after {previous:?}");
        }
        says(Level::DEBUG, true, Some(false), "DEBUG", "probe failed again");
        says(Level::DEBUG, false, Some(true), "DEBUG", "probe succeeded");
        says(Level::DEBUG, false, None, "DEBUG", "probe succeeded");
    }
}
